"""The downloader service: consume the topic, rebuild files, deliver them atomically.

Durable work is grouped. A **delivery round** fsyncs the verified files waiting for
delivery, records them in the ledger (one fsync), renames them into place and fsyncs each
directory once. It runs as soon as the consumer has nothing more to hand over (so one
small file is delivered at once) or when enough files wait (so a burst costs one round per
batch, not per file). A **checkpoint**, every ``commit.interval.ms``, also fsyncs the
unfinished transfers that changed, records their ranges and end records in the ledger, and
only then commits the consumed offsets: a committed offset never passes a byte that is not
durably staged or delivered. See docs/reliability.md for the guarantee.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from streamsend.config.settings import DownloaderSettings
from streamsend.download import ledger
from streamsend.download.destination import (
    DeliveryStopped,
    Destination,
    DestinationUnavailable,
    LocalDestination,
)
from streamsend.download.offsets import OffsetBook
from streamsend.download.pause import Pause
from streamsend.download.reassembly import Transfer
from streamsend.download.staging import (
    LEDGER_COMPACT_BYTES,
    DiskFull,
    Faults,
    StagingArea,
    Unstorable,
    VerificationFailed,
)
from streamsend.errors import ConfigError, ProtocolError, TransferIncomplete, UnsupportedVersion
from streamsend.live import Display, summary_text
from streamsend.lockfile import DirectoryLock
from streamsend.logs import event, log_banner
from streamsend.metrics import Heartbeat, Snapshot, serve_metrics
from streamsend.textsafe import listing
from streamsend.transport.base import CommitFailed, Consumer, Received, TopicPartition, Transport
from streamsend.wire.paths import UnsafePath, safe_relative_parts, safe_uploader_name
from streamsend.wire.protocol import (
    H_TRANSFER,
    Abort,
    Chunk,
    End,
    Manifest,
    NoKey,
    NotStreamsend,
    Pack,
    decode,
)
from streamsend.wire.sealed import Opener

Record = Chunk | End | Abort

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 30.0
# A delivery round starts when this many verified files wait, or the oldest has waited
# this long, even while records keep arriving.
DELIVERY_BATCH = 512
DELIVERY_MAX_WAIT_SECONDS = 0.2
# Delivered and abandoned transfer ids are remembered (so their replayed records are
# ignored) for partial.file.expiry.ms, but never more than this many (~200 bytes each).
DONE_LIMIT = 200_000
# With idle.exit.ms, how long to wait for the first assignment (joining a group on a
# broker that just started can take seconds) before concluding there is nothing to read.
JOIN_WAIT = 60.0
# Transfers refused or with unsafe paths: remembered to log each once; bounded.
REFUSED_LIMIT = 100_000
# While the disk is full, how often to look for room again; while the destination is
# unavailable, the first wait before retrying, doubled up to the second.
DISK_RETRY_SECONDS = 2.0
DESTINATION_RETRY_SECONDS = (1.0, 30.0)


def _no_faults(_step: str) -> None:
    return None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def default_group_id(output_dir: Path, topic: str) -> str:
    """One consumer group per downloader and topic (host, output directory, topic), so
    every downloader mirrors every file, a restarted one continues where it stopped, and
    the same output.dir on another topic is another group."""
    return f"streamsend-downloader-{socket.gethostname()}-{_digest(str(output_dir), topic)}"


def default_instance_id(output_dir: Path, topic: str) -> str:
    """Static membership: a restarted downloader (same host, output.dir and topic) takes its
    partitions back at once. Unique per output.dir (which is locked) and topic, so it is
    safe in a group.id the user shares between downloaders."""
    return f"streamsend-{socket.gethostname()}-{_digest(str(output_dir), topic)}"


@dataclass
class DownloadStats:
    delivered: int = 0
    delivered_bytes: int = 0
    rejected: int = 0
    refused: int = 0
    aborted: int = 0
    expired: int = 0
    skipped_foreign: int = 0
    skipped_invalid: int = 0
    skipped_version: int = 0
    skipped_no_key: int = 0  # encrypted records for none of our identities
    unsafe_paths: int = 0
    duplicates: int = 0
    disk_full_pauses: int = 0
    destination_pauses: int = 0  # deliveries waiting for an unavailable destination
    last_delivered: float | None = None  # wall-clock time of the last delivery
    started: float = field(default_factory=time.monotonic)  # for the summary line


class Downloader:
    def __init__(
        self,
        settings: DownloaderSettings,
        transport: Transport | None = None,
        faults: Faults = _no_faults,
        display: Display | None = None,
    ) -> None:
        self.settings = settings
        self.display = display or Display()  # live progress (streamsend.live)
        if transport is None:
            from streamsend.transport.kafka_clients import KafkaTransport

            transport = KafkaTransport(settings, "downloader")
        self.transport = transport
        self.stats = DownloadStats()
        self.output_dir = settings.output_dir.expanduser().resolve()
        self.staging = StagingArea(self.output_dir, faults)
        self.destination = self._destination(settings, faults)
        self.lock = DirectoryLock(
            self.output_dir / ".streamsend" / "downloader.lock",
            f"output.dir {str(self.output_dir)!r} is in use by another downloader",
            dir_fd=self.staging.root_fd,
        )
        self.transfers: dict[str, Transfer] = {}
        self.done: dict[str, float] = {}
        self._ready: list[tuple[Transfer, tuple[str, ...]]] = []
        self._ready_since = 0.0
        self._ignored: set[str] = set()  # refused or unsafe: log once, skip the rest
        self._keyless: set[str] = set()  # encrypted for none of our identities: said once
        self.opener = Opener.for_identity_file(settings.encryption_identity_file)
        # Uploader -> [unfinished transfers, bytes they hold]; verified ones not counted.
        self._usage: dict[str, list[int]] = {}
        self.offsets = OffsetBook()  # what may be committed (download/offsets.py)
        self._consumer: Consumer | None = None
        self._assigned: set[TopicPartition] = set()
        self._whole_topic: bool | None = None  # known once a spread transfer is met
        self._stop = False
        self.heartbeat = Heartbeat()  # for /healthz (metrics.port)
        self._paused_for_disk = False
        self._paused_for_destination = False
        self._pause: Pause | None = None  # while a wait or long delivery pauses consumption
        self._in_callback = False  # inside a rebalance callback: never poll from there
        self._assigned_at: float | None = None
        self._expiry = settings.partial_file_expiry_ms / 1000

    def _destination(self, settings: DownloaderSettings, faults: Faults) -> Destination:
        if not settings.s3_bucket_name:
            return LocalDestination(self.staging)
        from streamsend.download.s3 import S3Destination

        try:
            return S3Destination(settings, self.staging, faults)
        except BaseException:
            self.staging.close()
            raise

    # -- the loop ----------------------------------------------------------------

    def run(self) -> DownloadStats:
        self.lock.acquire()
        try:
            self.destination.check()
        except BaseException:
            self.lock.release()
            self.destination.close()
            self.staging.close()
            raise
        server = serve_metrics(self.settings.metrics_port, self.metrics, self.heartbeat)
        try:
            return self._run()
        finally:
            if server is not None:
                server.stop()
            self.lock.release()

    def metrics(self) -> Snapshot:
        """What /metrics reports (read from the scrape's thread: plain reads only)."""
        s, consumer = self.stats, self._consumer
        return Snapshot(
            "downloader",
            files={
                "delivered": s.delivered,
                "rejected": s.rejected,
                "refused": s.refused,
                "aborted": s.aborted,
                "expired": s.expired,
            },
            bytes=s.delivered_bytes,
            skipped={
                "foreign": s.skipped_foreign,
                "invalid": s.skipped_invalid,
                "version": s.skipped_version,
                "no_key": s.skipped_no_key,
                "unsafe_path": s.unsafe_paths,
                "duplicate": s.duplicates,
            },
            retries=s.disk_full_pauses + s.destination_pauses,
            staging_transfers=len(self.transfers),
            staging_bytes=sum(used for _, used in list(self._usage.values())),
            paused_for_disk=self._paused_for_disk,
            paused_for_destination=self._paused_for_destination,
            lag=consumer.lag() if consumer is not None else {},
            last_success=s.last_delivered,
            connected=consumer is not None and not self.transport.unreachable(),
            assigned=bool(self._assigned),
        )

    def _run(self) -> DownloadStats:
        self._recover()
        consumer = self.transport.consumer(self._consumer_overrides())
        previous = self._install_signal_handlers()
        try:
            self._consumer = consumer
            consumer.subscribe(self.settings.topic, self._on_assign, self._on_revoke(consumer))
            self._loop(consumer)
            self._retrying(consumer, lambda: self._checkpoint(consumer))
        finally:
            consumer.close()
            self.destination.close()
            self.staging.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.stats

    def _recover(self) -> None:
        state = self.staging.recover()
        self.done = state.done
        for t in state.staged.values():
            # The expiry clock restarts: while this downloader was down, the rest of the
            # file may have been waiting on the topic, so silence then proves nothing.
            t.last_activity = time.time()
            self._track(t)
            log.info("resuming %r from staging", t.label)
            if t.complete():
                self._completed(t, safe_relative_parts(t.path))

    def _consumer_overrides(self) -> dict[str, object]:
        topic = self.settings.topic
        overrides: dict[str, object] = {
            "group.id": default_group_id(self.output_dir, topic),
            "group.instance.id": default_instance_id(self.output_dir, topic),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Bound the prefetch queue: memory must not grow with file size.
            "queued.max.messages.kbytes": 32768,
            # With chunk-sized messages that bound is reached after a few records, and
            # librdkafka then waits fetch.queue.backoff.ms (1 s by default) before fetching
            # again: that wait, not the disk, held a 1 GiB download to ~53 MB/s.
            "fetch.queue.backoff.ms": 20,
            "fetch.max.bytes": 16 * 1024 * 1024,
            # One fetch request per broker is in flight. While the busy partition's queue
            # is full, the request carries only the idle partitions and the broker holds
            # it fetch.wait.max.ms (500 ms by default) for data that does not come, and
            # the busy one waits too: one file on a 4-partition topic downloaded at 0.7
            # of one partition's speed (bench --only partitions); 50 ms restores it.
            "fetch.wait.max.ms": 50,
        }
        if self.settings.metrics_port:
            # librdkafka reports each partition's consumer lag in its statistics.
            overrides["statistics.interval.ms"] = 10_000
        # The user's group.id / group.instance.id, when set, win (client_config order).
        return {k: v for k, v in overrides.items() if k not in self.settings.kafka}

    def _loop(self, consumer: Consumer) -> None:
        idle_limit = self.settings.idle_exit_ms / 1000
        commit_every = self.settings.commit_interval_ms / 1000
        last_message = time.monotonic()
        last_checkpoint = time.monotonic()
        last_upkeep = 0.0
        next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
        assigned = False
        while not self._stop and not self._enough(assigned, last_message):
            self.heartbeat.beat()
            record = consumer.poll(0 if self._ready else 0.5)
            now = time.monotonic()
            if self._assigned_at is not None:
                # The idle clock starts once partitions are assigned: joining the
                # group is not idleness.
                last_message = max(last_message, self._assigned_at)
                self._assigned_at = None
                if not assigned:
                    self._banner()
                assigned = True
            if record is not None:
                if not self._retrying(consumer, functools.partial(self._handle, record)):
                    break  # stopped while waiting for disk space; not committed
                self.offsets.consumed((record.topic, record.partition), record.offset)
                # Idle means no record: time spent storing one (or paused on a full disk
                # for it) is not, so the clock starts when it is done.
                now = last_message = time.monotonic()
            if (
                self._ready
                and (
                    record is None
                    or len(self._ready) >= DELIVERY_BATCH
                    or now - self._ready_since >= DELIVERY_MAX_WAIT_SECONDS
                )
                and not self._retrying(consumer, self._deliver_ready)
            ):
                break
            self.transport.raise_if_fatal()
            self.display.tick()
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_SECONDS
                self._progress()
            if now - last_checkpoint >= commit_every:
                self._retrying(consumer, lambda: self._checkpoint(consumer))
                last_checkpoint = time.monotonic()
            if now - last_upkeep >= min(60.0, self._expiry):
                last_upkeep = now
                self._upkeep()
            if idle_limit and assigned and now - last_message >= idle_limit:
                log.info("no message for %.1f s: exiting (idle.exit.ms)", idle_limit)
                break
            if idle_limit and not assigned and now - last_message >= max(idle_limit, JOIN_WAIT):
                log.warning(
                    "no partition of topic %r was assigned within %.0f s (does it exist?): "
                    "exiting (idle.exit.ms)",
                    self.settings.topic,
                    max(idle_limit, JOIN_WAIT),
                )
                break
        if idle_limit:
            self._summary()
        if self.transfers and idle_limit:
            self._retrying(consumer, lambda: self._checkpoint(consumer))
            labels = [repr(t.label) for t in self.transfers.values()]
            raise TransferIncomplete(f"{len(labels)} file(s) incomplete: {listing(labels)}")

    def _banner(self) -> None:
        """The start-up line, once connected (first assignment): what this downloader
        runs with."""
        s = self.settings
        group = s.kafka.get("group.id") or default_group_id(self.output_dir, s.topic)
        try:
            partitions: int | None = self.transport.admin().partition_count(s.topic)
        except Exception:  # a banner must not stop the downloader (Kafka gone again)
            log.debug("partition count unknown", exc_info=True)
            partitions = None
        identities, assigned = s.encryption_identity_file, len(self._assigned)
        log_banner(
            log,
            "downloader",
            f": topic {s.topic} ({'?' if partitions is None else partitions} partitions, "
            f"{assigned} assigned), group id {group}, delivering to "
            f"{self.destination.describe()}",
            s.kafka,
            f"identity file {identities}" if identities else None,
            topic=s.topic,
            partitions=partitions,
            assigned=assigned,
            group_id=group,
            destination=self.destination.describe(),
            identity_file=identities or None,
        )

    def _progress(self) -> None:
        log.info(
            "progress: %d file(s), %.1f MiB delivered; %d in staging%s",
            self.stats.delivered,
            self.stats.delivered_bytes / 2**20,
            len(self.transfers),
            "; Kafka unreachable" if self.transport.unreachable() else "",
        )

    def _summary(self) -> None:
        """The last line of a bounded run (idle.exit.ms)."""
        s = self.stats
        failures = {
            "rejected": s.rejected,
            "refused": s.refused,
            "abandoned": s.aborted,
            "expired": s.expired,
            "incomplete": len(self.transfers),
        }
        took = time.monotonic() - s.started
        text = summary_text(s.delivered, s.delivered_bytes, took, failures)
        log.info("%s", text, extra=event("run.summary", files=s.delivered, **failures))

    # -- waiting: disk full, destination unavailable --------------------------------

    def _retrying(self, consumer: Consumer, action: Callable[[], None]) -> bool:
        """Run ``action``; while the disk is full or the destination unavailable, pause
        consumption (download/pause.py), free what can be freed, and retry: every
        DISK_RETRY_SECONDS for disk space, with backoff for the destination. False when
        asked to stop before ``action`` succeeded."""
        pause = Pause(consumer)
        outer, self._pause = self._pause, pause
        waiting: DiskFull | DestinationUnavailable | None = None
        since = 0.0
        backoff = DESTINATION_RETRY_SECONDS[0]
        try:
            while True:
                try:
                    action()
                    return True
                except (DiskFull, DestinationUnavailable) as exc:
                    if self._stop or isinstance(exc, DeliveryStopped):
                        return False
                    if waiting is None:
                        waiting, since = exc, time.monotonic()
                        self._paused(exc)
                    if isinstance(exc, DiskFull):
                        seconds = DISK_RETRY_SECONDS
                        t = self.transfers.get(exc.transfer or "")
                        if t is not None:
                            # Its silence is our pause, not its uploader's: never expire it.
                            t.last_activity = time.time()
                    else:
                        seconds, backoff = backoff, min(2 * backoff, DESTINATION_RETRY_SECONDS[1])
                        log.info("still waiting for the destination (%s)", exc.cause)
                    self._upkeep()
                    self.heartbeat.beat()  # paused is the loop turning
                    if not pause.poll(seconds, lambda: self._stop):
                        return False
        finally:
            pause.end()
            self._pause = outer
            self._paused_for_disk = self._paused_for_destination = False
            if waiting is not None and not self._stop:
                took = time.monotonic() - since
                what = "output.dir has room" if isinstance(waiting, DiskFull) else (
                    "the destination is available"
                )  # fmt: skip
                log.warning(
                    "%s again: resumed after %.0f s",
                    what,
                    took,
                    extra=event("download.resumed", duration_s=round(took, 3)),
                )

    def _paused(self, exc: DiskFull | DestinationUnavailable) -> None:
        """Say once why consumption is paused."""
        if isinstance(exc, DestinationUnavailable):
            self._paused_for_destination = True
            self.stats.destination_pauses += 1
            log.warning(
                "cannot deliver to %s: %s; consumption paused, staged files wait and the "
                "delivery is retried with backoff",
                self.destination.describe(),
                exc.cause,
                extra=event("download.paused", cause=f"destination unavailable: {exc.cause}"),
            )
            return
        self._paused_for_disk = True
        self.stats.disk_full_pauses += 1
        free = self.staging.free_bytes()
        log.warning(
            "output.dir %r is full: %d more bytes needed for %s (%d free); consumption "
            "paused until there is room",
            str(self.output_dir),
            exc.needed,
            exc.what,
            free,
            extra=event(
                "download.paused", cause="disk full", bytes_needed=exc.needed, bytes_free=free
            ),
        )

    def _keep_alive(self) -> None:
        """Called by a destination during a long delivery: keep the group membership
        alive (consumption paused meanwhile); raises DeliveryStopped once asked to stop."""
        self.heartbeat.beat()
        if self._stop:
            raise DeliveryStopped()
        if self._pause is not None and not self._in_callback:
            self._pause.poll(0, lambda: self._stop)

    # -- durable steps -------------------------------------------------------------

    def _deliver_ready(self) -> None:
        """One delivery round: fsync the verified files, record them in the ledger, hand
        them to the destination (rename into place, or upload), fsync their directories.
        Raises DiskFull or DestinationUnavailable (what was not delivered stays ready for
        the next round)."""
        batch, self._ready = self._ready, []
        try:
            self._deliver(batch)
        except (DiskFull, DestinationUnavailable):
            self._ready = batch + self._ready
            raise

    def _deliver(self, batch: list[tuple[Transfer, tuple[str, ...]]]) -> None:
        now = time.time()
        self.staging.sync(t for t, _ in batch)
        self.staging.append(ledger.deliver_entry(t, now) for t, _ in batch)
        self.staging.sync_ledger()
        while batch:
            t, parts = batch[0]
            try:
                final = self.destination.deliver(t, parts, self._keep_alive)
            except (UnsafePath, VerificationFailed) as exc:
                batch.pop(0)
                self._reject(t, str(exc))
                continue
            batch.pop(0)
            self.offsets.delivered(t.transfer)
            self._untrack(t)
            self.done[t.transfer] = now
            end = t.end
            assert end is not None
            self.stats.delivered += 1
            self.stats.delivered_bytes += end.size
            self.stats.last_delivered = time.time()
            log.info(
                "delivered %r (%d bytes, sha256 %s)",
                final,
                end.size,
                end.sha256[:16],
                extra=_file_event(
                    "file.delivered",
                    t.uploader,
                    t.path,
                    bytes=end.size,
                    duration_s=round(time.monotonic() - t.started, 3),
                    outcome="delivered",
                    sha256=end.sha256,
                ),
            )
        self.destination.finish_round()

    def _checkpoint(self, consumer: Consumer) -> None:
        """Deliver what is ready, make every staged byte durable and recorded, then commit
        the consumed offsets. Raises DiskFull (nothing is committed). A destination that
        is unavailable does not stop it: the files waiting for it hold their offsets back
        (download/offsets.py) and the loop retries their delivery."""
        if self._ready:
            try:
                self._deliver_ready()
            except DestinationUnavailable as exc:
                log.debug("checkpoint without delivery: %s", exc.cause)
        dirty = [t for t in self.transfers.values() if t.dirty]
        self.staging.sync(dirty)
        self.staging.append(ledger.stage_entry(t) for t in dirty)
        self.staging.sync_ledger()
        for t in dirty:
            t.dirty = False
        if self.staging.ledger_size() > LEDGER_COMPACT_BYTES:
            # Every staged range is durable and recorded right now: safe to rewrite.
            self.staging.rewrite_ledger(self._compact_lines())
        offsets, metadata = self.offsets.to_commit()
        if offsets:
            try:
                consumer.commit(offsets, metadata)
            except CommitFailed as exc:
                log.warning(
                    "offset commit failed (records will be replayed): %s",
                    exc,
                    extra=event("offsets.commit_failed", cause=str(exc)),
                )
            else:
                self.offsets.committed(offsets, metadata)

    def _compact_lines(self) -> list[str]:
        state = ledger.LedgerState(staged=self.transfers, done=self.done)
        return ledger.compact(state)

    def _upkeep(self) -> None:
        """Expire abandoned transfers, forget old finished ones, clean rejected files."""
        now = time.time()
        for t in [t for t in self.transfers.values() if now - t.last_activity > self._expiry]:
            if t.verified:
                continue  # waiting for a delivery round, not abandoned
            self.staging.remove(t.transfer)
            self.staging.append([ledger.forget_entry(t.transfer)])
            self._untrack(t)
            self.stats.expired += 1
            log.warning(
                "abandoned %r: nothing received for %.0f s (partial.file.expiry.ms)",
                t.label,
                self._expiry,
                extra=_file_event(
                    "file.expired",
                    t.uploader,
                    t.path,
                    bytes=t.received.total(),
                    outcome="expired",
                    cause="nothing received for partial.file.expiry.ms",
                ),
            )
        while self.done and (
            len(self.done) > DONE_LIMIT or now - next(iter(self.done.values())) > self._expiry
        ):
            del self.done[next(iter(self.done))]
        removed = self.staging.clean_rejected(self.settings.rejected_retention_ms / 1000)
        if removed:
            log.info("deleted %d rejected file(s) older than rejected.retention.ms", removed)

    def _on_assign(self, parts: list[TopicPartition]) -> None:
        log.info("assigned %d partition(s) of %s", len(parts), self.settings.topic)
        self._assigned_at = time.monotonic()
        self._assigned.update(parts)
        self._whole_topic = None
        if self._consumer is not None and parts:
            self.offsets.assigned(self._consumer.committed_metadata(parts))

    def _on_revoke(self, consumer: Consumer) -> Callable[[list[TopicPartition]], None]:
        def revoke(parts: list[TopicPartition]) -> None:
            self._in_callback = True
            try:
                self._checkpoint(consumer)
            except DiskFull as full:
                log.warning("checkpoint at revocation postponed, output.dir is full (%s)", full)
            finally:
                self._in_callback = False
            self.offsets.revoked(parts)
            self._assigned -= set(parts)
            self._whole_topic = None

        return revoke

    def _check_spread(self) -> None:
        """A transfer spread over partitions can only be rebuilt by a downloader that
        reads every partition: refuse to run as one member of a larger group."""
        if self._whole_topic is None:
            topic = self.settings.topic
            count = self.transport.admin().partition_count(topic)
            self._whole_topic = {(topic, p) for p in range(count)} <= self._assigned
        if not self._whole_topic:
            raise ConfigError(
                f"topic {self.settings.topic!r} carries files spread over its partitions "
                "(uploader partitioning=chunk), which a downloader that shares its group.id "
                "with others cannot rebuild: give each downloader its own group.id, or "
                "upload with partitioning=file"
            )

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM and SIGINT finish cleanly; returns the handlers they replaced."""

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing", signal.Signals(signum).name)
            self._stop = True

        return {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    # -- one record --------------------------------------------------------------

    def _handle(self, rec: Received) -> None:
        """Apply one record. Raises only DiskFull: anything else one record causes is
        logged and confined to its transfer."""
        try:
            message = decode(rec.headers, rec.value, self.opener)
        except NoKey as exc:
            self.stats.skipped_no_key += 1
            self._no_key(exc, rec)
            return
        except NotStreamsend:
            self.stats.skipped_foreign += 1
            log.warning(
                "skipping %s: not a Streamsend record",
                rec.where,
                extra=event("record.skipped", where=rec.where, cause="not a Streamsend record"),
            )
            return
        except UnsupportedVersion as exc:
            self.stats.skipped_version += 1
            log.error(
                "skipping %s: %s",
                rec.where,
                exc,
                extra=event("record.skipped", where=rec.where, cause=str(exc)),
            )
            return
        except ProtocolError as exc:
            self.stats.skipped_invalid += 1
            log.warning(
                "skipping %s: %s",
                rec.where,
                exc,
                extra=event("record.skipped", where=rec.where, cause=str(exc)),
            )
            self._reject_transfer_of(rec, str(exc))
            return
        if isinstance(message, Manifest):
            self._manifest(message)
            return
        # A pack is handled as the records that would carry each of its files alone.
        for record in message.records() if isinstance(message, Pack) else [message]:
            self._handle_record(record, rec)

    def _manifest(self, manifest: Manifest) -> None:
        """A send's manifest (``streamsend send``): nothing to store; ``receive`` uses it."""
        log.debug("send %s lists %d file(s)", manifest.transfer, len(manifest.files))

    def _enough(self, assigned: bool, last_message: float) -> bool:
        """Whether a bounded run (``receive``) has what it waits for; never for a service."""
        return False

    def _handle_record(self, record: Record, rec: Received) -> None:
        where = (rec.topic, rec.partition)
        if self.offsets.skip(record.transfer, where, rec.offset, record.transfer in self.done):
            self.stats.duplicates += 1
            return
        if record.transfer in self._ignored:
            return  # already reported once
        if not isinstance(record, Abort) and record.spread:
            self._check_spread()
        try:
            parts = self._checked_path(record)
            self._apply(record, parts)
            if record.transfer in self.transfers:
                self.offsets.met(record.transfer, where, rec.offset)
        except UnsafePath as exc:
            self.stats.unsafe_paths += 1
            self._ignore(record.transfer)
            log.error(
                "rejecting %s: unsafe path %r: %s",
                rec.where,
                record.path,
                exc,
                extra=_file_event(
                    "file.rejected",
                    record.uploader,
                    record.path,
                    outcome="rejected",
                    cause=f"unsafe path: {exc}",
                ),
            )
            self._drop(record.transfer)
        except (ProtocolError, Unstorable) as exc:
            self.stats.skipped_invalid += 1
            log.warning(
                "skipping %s: %s",
                rec.where,
                exc,
                extra=event("record.skipped", where=rec.where, cause=str(exc)),
            )
            self._reject_if_staged(record.transfer, str(exc))
        except OSError as exc:
            # One record's trouble (an I/O error, a file removed under us) fails its
            # transfer, never the downloader.
            log.error(
                "%s: cannot store %r: %s",
                rec.where,
                record.path,
                exc,
                extra=_file_event(
                    "file.store_failed", record.uploader, record.path, cause=f"I/O error: {exc}"
                ),
            )
            self._reject_if_staged(record.transfer, f"I/O error: {exc}")

    def _checked_path(self, record: Record) -> tuple[str, ...]:
        safe_uploader_name(record.uploader)
        return safe_relative_parts(record.path)

    def _apply(self, record: Record, parts: tuple[str, ...]) -> None:
        if isinstance(record, Abort):
            self.stats.aborted += 1
            log.info(
                "%r: upload abandoned by the uploader (%r)",
                f"{record.uploader}/{record.path}",
                record.reason,
                extra=_file_event(
                    "file.aborted",
                    record.uploader,
                    record.path,
                    outcome="aborted",
                    cause=record.reason,
                ),
            )
            # Remembered as finished: a chunk of it arriving late (from another partition)
            # must not start a staging file that would only wait to expire.
            self._drop(record.transfer)
            self._finish(record.transfer)
            return
        t = self.transfers.get(record.transfer)
        if t is None:
            t = self._start(record)
            if t is None:
                return
        if isinstance(record, Chunk):
            pieces = t.new_pieces(record)
            if not pieces:
                self.stats.duplicates += 1
            view = memoryview(record.data)
            for start, stop in pieces:
                piece = view[start - record.offset : stop - record.offset]
                # Bytes first, bookkeeping second: a failed write (disk full) must not
                # leave the range recorded as received.
                self.staging.write(t, start, piece)
                t.record(start, piece)
                self._usage[t.uploader][1] += stop - start
            self.display.advance(t.transfer, t.received.total())
        else:
            t.accept_end(record)
        if t.complete() and not t.verified:
            self._completed(t, parts)

    def _start(self, record: Chunk | End) -> Transfer | None:
        size = record.size
        why = self._refusal(record.uploader, size)
        if why is not None:
            self.stats.refused += 1
            self._ignore(record.transfer)
            log.warning(
                "refusing %r (transfer %s): %s", f"{record.uploader}/{record.path}",
                record.transfer, why,
                extra=_file_event(
                    "file.refused", record.uploader, record.path, bytes=size,
                    outcome="refused", cause=why, transfer=record.transfer,
                ),
            )  # fmt: skip
            return None
        t = Transfer(record.transfer, record.uploader, record.path, size)
        self._track(t)
        return t

    def _refusal(self, uploader: str, size: int) -> str | None:
        total = self.staging.total_bytes()
        if size > total:
            return f"its declared size {size} exceeds the output filesystem ({total} bytes)"
        count, held = self._usage.get(uploader, (0, 0))
        limit = self.settings.staging_max_transfers_per_uploader
        if count >= limit:
            return (
                f"its uploader already has {count} unfinished transfers "
                f"(staging.max.transfers.per.uploader={limit})"
            )
        # Half the filesystem as it is now (it may have been grown since start-up).
        cap = self.settings.staging_max_bytes_per_uploader or total // 2
        if held >= cap:
            return (
                f"its uploader's unfinished transfers already hold {held} bytes in staging "
                f"(staging.max.bytes.per.uploader={cap})"
            )
        return None

    def _completed(self, t: Transfer, parts: tuple[str, ...]) -> None:
        try:
            self.staging.verify(t)
        except VerificationFailed as exc:
            self._reject(t, str(exc))
            return
        # It is now a delivery, no longer an unfinished transfer: it counts against
        # neither cap (a pack verifies hundreds of files at once, before their round).
        self._release(t)
        t.verified = True
        if not self._ready:
            self._ready_since = time.monotonic()
        self._ready.append((t, parts))

    # -- bookkeeping ---------------------------------------------------------------

    def _track(self, t: Transfer) -> None:
        self.transfers[t.transfer] = t
        self.display.start(t.transfer, t.label, t.declared_size)
        usage = self._usage.setdefault(t.uploader, [0, 0])
        usage[0] += 1
        usage[1] += t.received.total()

    def _untrack(self, t: Transfer) -> None:
        self.offsets.unfinished(t.transfer)
        if self.transfers.pop(t.transfer, None) is None:
            return
        self.display.finish(t.transfer, t.declared_size, t.verified)
        if not t.verified:
            self._release(t)

    def _release(self, t: Transfer) -> None:
        """``t`` no longer counts against its uploader's staging caps."""
        usage = self._usage[t.uploader]
        usage[0] -= 1
        usage[1] -= t.received.total()
        if usage[0] == 0:
            del self._usage[t.uploader]

    def _finish(self, transfer: str) -> None:
        """Remember a transfer as finished, durably at the next ledger sync."""
        now = time.time()
        self.done[transfer] = now
        self.staging.append([ledger.done_entry(transfer, now)])

    def _drop(self, transfer: str) -> None:
        t = self.transfers.get(transfer)
        if t is not None:
            self._ready = [(r, p) for r, p in self._ready if r is not t]
            self._untrack(t)
        self.staging.remove(transfer)

    def _no_key(self, exc: NoKey, rec: Received) -> None:
        """Said once per file (per record for a pack, whose files are not known)."""
        if exc.transfer is not None:
            if exc.transfer in self._keyless:
                return
            if len(self._keyless) >= REFUSED_LIMIT:
                self._keyless.clear()  # bounded: forgetting only costs a repeated line
            self._keyless.add(exc.transfer)
        what = f"file {exc.transfer}" if exc.transfer else "a pack of small files"
        log.warning(
            "skipping %s (%s): %s; this downloader holds no key for it (encryption.identity.file)",
            what,
            rec.where,
            exc,
            extra=event(
                "file.no_key",
                transfer=exc.transfer,
                where=rec.where,
                outcome="skipped",
                cause="no identity for it",
            ),
        )

    def _reject_transfer_of(self, rec: Received, reason: str) -> None:
        """A record that fails its checks fails its transfer: staged data is rejected
        (never delivered) and later records of it are skipped."""
        raw = dict(rec.headers).get(H_TRANSFER)
        transfer = raw.decode(errors="replace") if raw else ""
        if transfer in self.transfers:
            self._reject(self.transfers[transfer], reason)
        if transfer:
            self._ignore(transfer)

    def _ignore(self, transfer: str) -> None:
        if len(self._ignored) >= REFUSED_LIMIT:
            self._ignored.clear()  # bounded: forgetting only costs a repeated log line
        self._ignored.add(transfer)

    def _reject_if_staged(self, transfer: str, reason: str) -> None:
        t = self.transfers.get(transfer)
        if t is not None:
            self._reject(t, reason)

    def _reject(self, t: Transfer, reason: str) -> None:
        self._ready = [(r, p) for r, p in self._ready if r is not t]
        self._untrack(t)
        target = self.staging.reject(t, reason)
        self._finish(t.transfer)
        self.stats.rejected += 1
        log.error(
            "rejected %r: %s (kept as %s)",
            t.label,
            reason,
            target,
            extra=_file_event(
                "file.rejected",
                t.uploader,
                t.path,
                bytes=t.declared_size,
                outcome="rejected",
                cause=reason,
                kept_as=str(target),
            ),
        )


def _file_event(name: str, uploader: str, path: str, **fields: Any) -> dict[str, Any]:
    """The fields of a log line about one file (uploader and path from the topic)."""
    return event(name, uploader=uploader, path=path, **fields)
