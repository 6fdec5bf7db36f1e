"""The uploader service: watch input.dir, stream eligible files as chunks, remember them.

Files are read once, in chunk-sized pieces, hashing as they go: memory holds at most
the producer's bounded queue, never a whole file. A file whose size, modification time,
inode or change time changes while it is read is abandoned with an Abort record and sent
again once it is stable, so a torn version is never delivered.

Kafka is reached only through :class:`~streamsend.transport.base.Transport`
(``KafkaTransport`` unless one is given), so the whole service runs on the in-memory
transport in unit tests.

The durable steps of one file, in order: every record of the transfer is acknowledged;
then the after.upload action (rename/delete); then the state record. A crash between
two steps repeats at most the transfer (a new transfer of the same bytes, which the
downloader delivers as an identical version), never loses a file. The action comes
before the state record because a state record without the action would leave the file
in input.dir for ever (recorded as sent, so neither sent nor acted on again), whereas the
action without the state record leaves nothing that needs remembering.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import logging
import math
import os
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

import platformdirs

from streamsend.config.settings import UploaderSettings
from streamsend.errors import EnvironmentProblem, Interrupted, KafkaFatal, TransferIncomplete
from streamsend.live import Display, summary_text
from streamsend.lockfile import DirectoryLock
from streamsend.logs import event, log_banner
from streamsend.metrics import Heartbeat, Snapshot, serve_metrics
from streamsend.textsafe import listing
from streamsend.transport.base import Producer, QueueFull, TopicSpec, Transport
from streamsend.upload.encryption import (
    RecordEncoder,
    key_file_path,
    load_or_create_secret,
    local_file,
    recipients_of,
)
from streamsend.upload.packing import PackBuffer, Packs
from streamsend.upload.planning import ScanPlan, plan_changes, plan_scan
from streamsend.upload.scanner import Candidate, Identity, Walk, identity
from streamsend.upload.selection import FileRules, refuse_system_dir
from streamsend.upload.state import (
    STATE_TOPIC_CONFIG,
    KafkaStateStore,
    MemoryStateStore,
    SentRecord,
    StateStore,
    Version,
    check_compacted,
    state_partition,
    version_of,
)
from streamsend.upload.watcher import Watcher, WatchUnavailable
from streamsend.wire.chunking import (
    ChunkSizing,
    automatic_chunk_size,
    chunk_count,
    fixed_chunk_size,
)
from streamsend.wire.codecs import NO_CODEC, Codec
from streamsend.wire.paths import is_wire_path
from streamsend.wire.protocol import (
    Abort,
    Chunk,
    End,
    Pack,
    new_transfer_id,
)
from streamsend.wire.protocol import Message as Record
from streamsend.wire.sealed import FileSeal, UploaderSecret

log = logging.getLogger(__name__)

STOCK_MESSAGE_LIMIT = 1_048_588  # Kafka's default message.max.bytes, assumed in dry runs
SHUTDOWN_GRACE_SECONDS = 30.0
PROGRESS_EVERY_SECONDS = 30.0
TEST_FILE_EVERY_SECONDS = 10.0
FAILED_RETRY_SECONDS = 10.0
# How often files that failed since they were planned are looked for (see _sweep_retries).
RETRY_SWEEP_SECONDS = 1.0
# Files scheduled to be looked at again (young, or waiting for a retry), at most; beyond
# it (a flood of young files with a long file.minimum.age.ms) they wait for a full scan,
# so memory does not grow with the flood.
DUE_PATHS_MAX = 100_000
# Automatic topic.partitions: per broker, and bounds.
PARTITIONS_PER_BROKER = 4
AUTO_PARTITIONS = (4, 64)
# Packs waiting to be produced hold at most this many chunk sizes of file data in all.
PACK_BUFFERS = 4

# A test seam: called with the name of a durable step ("after.upload", "state") just
# before the uploader takes it, so that a test can stop the uploader exactly there by
# raising. (The in-memory broker has the same kind of hook before each acknowledgement.)
Faults = Callable[[str], None]


def _no_faults(_step: str) -> None:
    return None


class _Stopping(Exception):
    """Raised inside a send when the uploader was asked to stop."""


# Exceptions that end the run; any other exception while handling one file fails only
# that file.
_PASS_THROUGH = (_Stopping, KafkaFatal, Interrupted)


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


@dataclass
class InFlight:
    """One transfer: everything the uploader knows about it, from the first read to the
    last acknowledgement."""

    candidate: Candidate
    wire: str  # the path on the wire and in the state
    transfer: str
    read: Identity | None = None  # the version that was read (fstat before reading)
    produced: int = 0
    outstanding: int = 0  # produced, not acknowledged yet
    error: str | None = None
    closed: bool = False  # End or Abort produced: nothing more will be
    aborted: str | None = None
    sha256: str = ""
    codec: Codec = NO_CODEC  # this file's values' codec (it gives up on incompressible data)
    seal: FileSeal | None = None  # this file's key, when encrypting
    started: float = field(default_factory=time.monotonic)  # for the sent line's duration


@dataclass
class UploadStats:
    sent: int = 0
    sent_bytes: int = 0
    # Files whose latest attempt failed, with why; a later success removes them.
    failed: dict[str, str] = field(default_factory=dict)
    aborted: int = 0
    skipped_unchanged: int = 0
    failures: int = 0  # attempts that failed (each is retried)
    retries: int = 0  # files looked at again later: failed, or changed while read
    last_sent: float | None = None  # wall-clock time of the last file sent
    started: float = field(default_factory=time.monotonic)


class Uploader:
    # False (``streamsend send``): what was sent is remembered in memory only, so no
    # state topic is created or read and every file given is sent.
    keeps_state = True

    def __init__(
        self,
        settings: UploaderSettings,
        once: bool = False,
        transport: Transport | None = None,
        faults: Faults | None = None,
        display: Display | None = None,
    ) -> None:
        """``transport`` None: a ``KafkaTransport`` for ``settings``. ``faults``: see
        :data:`Faults` (tests only). ``display``: live progress (streamsend.live)."""
        self.settings = settings
        self.display = display or Display()
        self.once = once
        self.stats = UploadStats()
        self.input_dir = settings.input_dir.expanduser().resolve()
        self.rules = FileRules.from_settings(
            settings.input_file_pattern, settings.file_minimum_age_ms, settings.file_maximum_age_ms
        )
        self._transport = transport
        self.faults = faults or _no_faults
        self.lock: DirectoryLock | None = None  # held while running
        self.producer: Producer | None = None
        self.state: StateStore = MemoryStateStore()
        self.sent: dict[str, Version] = {}  # by wire path
        self.inflight: dict[str, InFlight] = {}  # by wire path
        self._finished: list[InFlight] = []
        self._retry_after: dict[str, float] = {}  # by local path
        self._refused: dict[str, Version] = {}  # local names that cannot be sent
        self._new_state_topic = False  # created by this run: no state to read
        self._stop = False
        self.heartbeat = Heartbeat()  # for /healthz (metrics.port)
        self._stop_at = 0.0
        self._next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
        self.sizing = ChunkSizing(0, 0, "")
        self.partitions = 1  # of the chunk topic
        # Checked before anything starts: a bad recipient is a configuration error.
        self._recipients = recipients_of(settings)
        self._secret: UploaderSecret | None = None  # the uploader key, when encrypting
        self.encoder = RecordEncoder.plain()
        padded = bool(self._recipients) and settings.encryption_padding == "chunk"
        # Compression cannot make a record padded to the chunk size any smaller.
        self.codec = NO_CODEC if settings.dry_run or padded else Codec(settings.compression_type)
        self._packs: Packs[InFlight] = Packs(0, 0)  # sized once the chunk size is known
        # Watching input.dir (see _loop): None while it is scanned in full every
        # scan.interval.ms instead.
        self._watcher: Watcher | None = None
        self._watch_lost = False  # input.dir itself went away: watch it again when back
        self._next_full_scan = 0.0  # monotonic, like the times below
        self._last_full_scan = 0.0  # when the latest full scan's walk ended
        self._changed: set[str] = set()  # local paths to look at
        # Local paths to look at again at a given time (too young yet, or waiting to be
        # retried): a heap of (time, path), and the earliest time of each path in it.
        self._due: list[tuple[float, str]] = []
        self._due_at: dict[str, float] = {}
        self._retries_seen: dict[str, float] = {}  # _retry_after entries already in _due
        self._next_retry_sweep = 0.0

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            from streamsend.transport.kafka_clients import KafkaTransport

            self._transport = KafkaTransport(self.settings, "uploader")
        return self._transport

    # -- start-up ----------------------------------------------------------------

    def _check_input_dir(self) -> None:
        refuse_system_dir(PurePosixPath(self.input_dir))
        if not self.input_dir.is_dir():
            raise EnvironmentProblem(f"input.dir {str(self.input_dir)!r} is not a directory")
        if not os.access(self.input_dir, os.R_OK | os.X_OK):
            raise EnvironmentProblem(f"input.dir {str(self.input_dir)!r} is not readable")

    def _connect(self) -> None:
        s = self.settings
        if s.dry_run:
            limit = STOCK_MESSAGE_LIMIT
            self.sizing = (
                fixed_chunk_size(s.binary_chunk_size_bytes, limit, limit)
                if s.binary_chunk_size_bytes
                else automatic_chunk_size(limit, limit, s.upload_payload_percentage)
            )
            log.info("dry run: nothing is produced; chunk size %d bytes", self.sizing.chunk_bytes)
            self._banner(limit, limit)
            return
        transport = self.transport
        admin = transport.admin()
        brokers = admin.wait_for_cluster(lambda: self._stop)
        replication = s.topic_replication_factor or min(3, brokers)
        low, high = AUTO_PARTITIONS
        partitions = s.topic_partitions or max(low, min(high, PARTITIONS_PER_BROKER * brokers))
        admin.ensure_topic(s.topic, TopicSpec(partitions, replication, {}))
        self.partitions = admin.partition_count(s.topic)
        if not self.keeps_state:
            broker_limit, topic_limit = admin.message_limits(s.topic)
            self._size_chunks(broker_limit, topic_limit)
            self.producer = transport.producer(self._producer_overrides())
            return
        state_topic = s.processing_state_topic
        spec = TopicSpec(s.processing_state_topic_partitions, replication, STATE_TOPIC_CONFIG)
        self._new_state_topic = admin.ensure_topic(state_topic, spec)
        if not self._new_state_topic:
            check_compacted(admin, state_topic)
        broker_limit, topic_limit = admin.message_limits(s.topic)
        self._size_chunks(broker_limit, topic_limit)
        self.producer = transport.producer(self._producer_overrides())
        partition = state_partition(s.topic, s.uploader_name, admin.partition_count(state_topic))
        self.state = KafkaStateStore(
            transport,
            self.producer,
            state_topic,
            s.topic,
            s.uploader_name,
            partition,
            self._secret,
        )

    def _size_chunks(self, broker_limit: int, topic_limit: int) -> None:
        s = self.settings
        if s.binary_chunk_size_bytes:
            self.sizing = fixed_chunk_size(s.binary_chunk_size_bytes, broker_limit, topic_limit)
        else:
            self.sizing = automatic_chunk_size(
                broker_limit, topic_limit, s.upload_payload_percentage
            )
            log.info(
                "Automatic configuration of a chunk size of %d bytes (%s)",
                self.sizing.chunk_bytes,
                self.sizing.reason,
            )
        self._banner(broker_limit, topic_limit)

    def _banner(self, broker_limit: int, topic_limit: int) -> None:
        """The start-up line: what this uploader runs with."""
        s, recipients = self.settings, len(self._recipients)
        limit, chunk = min(broker_limit, topic_limit), self.sizing.chunk_bytes
        log_banner(
            log,
            "uploader",
            f" {s.uploader_name!r}{' (dry run)' if s.dry_run else ''}: topic {s.topic} "
            f"({self.partitions} partitions), message size limit {limit} bytes (broker "
            f"{broker_limit}, topic {topic_limit}), chunk size {chunk} bytes",
            s.kafka,
            f"{recipients} recipient(s)" if recipients else None,
            uploader=s.uploader_name,
            topic=s.topic,
            partitions=self.partitions,
            broker_message_max_bytes=broker_limit,
            topic_max_message_bytes=topic_limit,
            chunk_bytes=chunk,
            recipients=recipients,
            dry_run=s.dry_run,
        )

    def _load_state(self) -> None:
        sent = self.state.load(new_topic=self._new_state_topic)
        # Paths no downloader accepts, recorded by an uploader older than the path rules:
        # forgotten, so that those files are considered again (sent in NFC, or reported).
        stale = [path for path in sent if not is_wire_path(path)]
        for path in stale:
            del sent[path]
            self.state.forget(path)
        if stale:
            log.info(
                "state: forgot %d record(s) of paths that are not valid on the wire", len(stale)
            )
        self.sent = sent

    def _producer_overrides(self) -> dict[str, Any]:
        limit = self.sizing.message_limit
        return {
            # acks=all, ordered and de-duplicated retries.
            "enable.idempotence": True,
            # Retry for ever: an outage pauses a transfer, it never fails it.
            "message.timeout.ms": 0,
            # librdkafka's own limit (1,000,000) is below the broker's: match the topic.
            "message.max.bytes": limit,
            "batch.size": limit,
            # Bound the queue so memory does not grow with file size.
            "queue.buffering.max.kbytes": max(32 * 1024, 4 * limit // 1024),
            "linger.ms": 5,
            # Values are compressed per record (compression.type), before encryption.
            "compression.type": "none",
        }

    def metrics(self) -> Snapshot:
        """What /metrics reports (read from the scrape's thread: plain reads only)."""
        s = self.stats
        connected = self.producer is not None and not self.transport.unreachable()
        return Snapshot(
            "uploader",
            files={"sent": s.sent, "failed": s.failures, "aborted": s.aborted},
            bytes=s.sent_bytes,
            retries=s.retries,
            in_flight=len(self.inflight),
            last_success=s.last_sent,
            connected=connected,
        )

    # -- the loop ----------------------------------------------------------------

    def run(self) -> UploadStats:
        self._check_input_dir()
        lock = DirectoryLock(
            _lock_path(self.input_dir),
            f"input.dir {str(self.input_dir)!r} is in use by another uploader",
        )
        lock.acquire()
        self.lock = lock
        previous = self._install_signal_handlers()
        server = serve_metrics(self.settings.metrics_port, self.metrics, self.heartbeat)
        try:
            self._run_locked(lock)
        finally:
            if server is not None:
                server.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self._summary()
        if self.stats.failed:
            names = listing([f"{name!r} ({why})" for name, why in self.stats.failed.items()])
            if self.once:
                raise TransferIncomplete(f"{len(self.stats.failed)} file(s) not sent: {names}")
            # A service asked to stop stops cleanly; what failed is retried next time.
            log.warning("stopping with %d file(s) not sent yet: %s", len(self.stats.failed), names)
        return self.stats

    def _run_locked(self, lock: DirectoryLock) -> None:
        try:
            if self._recipients and not self.settings.dry_run:
                path = key_file_path(self.settings, self.input_dir)
                self._secret = UploaderSecret(load_or_create_secret(path))
            self._connect()
            chunk = self.sizing.chunk_bytes
            if self._secret is not None:
                self.encoder = RecordEncoder.sealing(
                    self._recipients, self.settings, self._secret, chunk
                )
            self._packs = Packs(
                record_limit=self.encoder.pack_bytes(chunk), total_limit=PACK_BUFFERS * chunk
            )
            self._load_state()
            self._loop()
        except KafkaFatal:
            lock.release()  # the clients are unusable: nothing to drain
            raise
        except Exception:
            self._drain()
            lock.release()
            raise
        # Not on a BaseException that is no Exception (a test's simulated crash): like a
        # killed process, the uploader then leaves everything as it is.
        self._drain()
        lock.release()

    def _loop(self) -> None:
        """Full scans, and between them what the watcher reports and what is due to be
        looked at again. Without a watcher, full scans every scan.interval.ms."""
        next_test_file = time.monotonic()
        if not self.once:
            self._watch()  # before the first full scan: nothing that lands meanwhile is missed
        try:
            while not self._stop:
                self.heartbeat.beat()
                now = time.monotonic()
                if self.settings.generate_test_file_bytes and now >= next_test_file:
                    self._write_test_file()
                    next_test_file = now + TEST_FILE_EVERY_SECONDS
                try:
                    if now >= self._next_full_scan:
                        if self._watch_lost:
                            self._watch(again=True)
                        self._scan_and_send()
                        if self.once:
                            break
                    else:
                        self._send_changes()
                except _Stopping:
                    break
                self._wait()
        finally:
            self._unwatch()

    def _scan_and_send(self) -> None:
        """A full scan: every file of input.dir, and the recorded files that are gone."""
        # The walk sees whatever changed before it; the watcher reports what changes after.
        self._changed.clear()
        plan = plan_scan(
            self.input_dir,
            Walk(self.input_dir),
            self.rules,
            self.sent,
            self.inflight,
            self._waiting,
            time.time_ns(),
        )
        self._last_full_scan = time.monotonic()
        self._report_refused(plan.refused)
        self._forget(plan.gone)
        self._look_again_when_old_enough(plan)
        self._send_batch(plan.send)
        interval = (
            self.settings.full_scan_interval_ms if self._watcher else self.settings.scan_interval_ms
        )
        self._next_full_scan = time.monotonic() + interval / 1000

    # -- between full scans: what changed --------------------------------------------

    def _watch(self, again: bool = False) -> None:
        try:
            self._watcher = Watcher(self.input_dir, self.rules.wanted_name)
        except WatchUnavailable as exc:
            if again:  # input.dir is not back yet: the full scans say what they find
                log.debug("cannot watch input.dir yet: %s", exc)
            else:
                log.warning(
                    "cannot watch input.dir for changes: %s; scanning it in full every %d ms "
                    "(scan.interval.ms) instead",
                    exc,
                    self.settings.scan_interval_ms,
                )
            return
        self._watch_lost = False
        log.info(
            "%s input.dir and %d directories below it for new files; a full scan every "
            "%d ms (full.scan.interval.ms)",
            "watching again" if again else "watching",
            self._watcher.watches - 1,
            self.settings.full_scan_interval_ms,
        )

    def _unwatch(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _wait(self) -> None:
        """Wait for an acknowledgement, a change in input.dir, a file due to be looked at
        again or the next full scan, whichever comes first (at most 0.1 s)."""
        now = time.monotonic()
        until = min(self._next_full_scan, self._due[0][0] if self._due else math.inf)
        timeout = max(0.0, min(0.1, until - now))
        watcher = self._watcher
        if watcher is None:
            self._poll(timeout)
            return
        # Acknowledgements complete files (after.upload, state): while some are due, wait
        # on the producer and only glance at the watcher; otherwise wait on the watcher.
        busy = bool(self.inflight)
        if busy:
            self._poll(min(timeout, 0.01))
        try:
            changes = watcher.changes(0 if busy else timeout)
        except WatchUnavailable as exc:
            log.warning(
                "stopped watching input.dir: %s; scanning it in full every %d ms "
                "(scan.interval.ms) instead",
                exc,
                self.settings.scan_interval_ms,
            )
            self._unwatch()
            self._next_full_scan = now  # what the watcher could not watch is unseen
            return
        if not busy:
            self._poll(0)
        self._changed |= changes.paths
        if watcher.lost:
            log.warning(
                "input.dir was removed, moved or unmounted: scanning it in full every %d ms "
                "(scan.interval.ms) until it can be watched again",
                self.settings.scan_interval_ms,
            )
            self._unwatch()
            self._watch_lost = True
        if changes.rescan:
            # Events were lost: only a full scan can tell what changed. As soon as the
            # polling period allows, so that a flood of arrivals is not one scan after
            # another.
            soon = self._last_full_scan + self.settings.scan_interval_ms / 1000
            self._next_full_scan = min(self._next_full_scan, soon)

    def _send_changes(self) -> None:
        """Plan and send only the paths that changed and the files now due."""
        now = time.monotonic()
        self._sweep_retries(now)
        due = self._due
        while due and due[0][0] <= now:
            at, local = heapq.heappop(due)
            if self._due_at.get(local) == at:  # else superseded by an earlier time
                del self._due_at[local]
                self._changed.add(local)
        if not self._changed:
            return
        changed, self._changed = self._changed, set()
        plan = plan_changes(
            self.input_dir,
            changed,
            self.rules,
            self.sent,
            self.inflight,
            self._waiting,
            time.time_ns(),
        )
        self._report_refused_changes(plan)
        self._forget_changes(plan.gone)
        self._look_again_when_old_enough(plan)
        self._send_batch(plan.send)

    def _waiting(self, local: str) -> bool:
        """Whether a file that failed recently still waits to be retried; it is looked at
        again when it may be, not only at the next full scan."""
        at = self._retry_after.get(local, 0)
        if at <= time.monotonic():
            return False
        self._look_again(local, at)
        return True

    def _sweep_retries(self, now: float) -> None:
        """Files that failed or were abandoned since they were planned wait in
        _retry_after; look at them again when their time comes, as a scan every
        second would."""
        if now < self._next_retry_sweep:
            return
        self._next_retry_sweep = now + RETRY_SWEEP_SECONDS
        seen = self._retries_seen
        for local, at in self._retry_after.items():
            if seen.get(local) != at:
                seen[local] = at
                self._look_again(local, at)
        if len(seen) > len(self._retry_after):
            self._retries_seen = {k: v for k, v in seen.items() if k in self._retry_after}

    def _look_again_when_old_enough(self, plan: ScanPlan) -> None:
        if not plan.young:
            return
        # Ages are on the wall clock (mtime), the schedule is monotonic.
        offset = time.monotonic() - time.time_ns() / 1e9
        for old_enough_ns, local in plan.young:
            self._look_again(local, old_enough_ns / 1e9 + offset + 0.001)

    def _look_again(self, local: str, at: float) -> None:
        if self._due_at.get(local, math.inf) <= at:
            return  # looked at earlier anyway, and scheduled again then if need be
        if len(self._due_at) >= DUE_PATHS_MAX:
            return
        self._due_at[local] = at
        heapq.heappush(self._due, (at, local))

    def _report_refused_changes(self, plan: ScanPlan) -> None:
        """:meth:`_report_refused` for a plan of changes, which knows only about the
        paths it checked."""
        for local, (version, why) in plan.refused.items():
            if self._refused.get(local) != version:
                log.error(
                    "cannot send %r: %s; it is left as it is",
                    local,
                    why,
                    extra=self._event("file.skipped", local, outcome="skipped", cause=why),
                )
            self.stats.failed[local] = why
            self._refused[local] = version
        for local in plan.checked - plan.refused.keys():
            if self._refused.pop(local, None) is not None:
                self.stats.failed.pop(local, None)

    def _forget_changes(self, gone: list[str]) -> None:
        """:meth:`_forget` for a plan of changes: one by one as files leave (after.upload
        deletes or renames every file it sends), so logged quietly."""
        for path in gone:
            del self.sent[path]
            if not self.settings.dry_run:
                self.state.forget(path)
            log.debug("state: forgot %r, no longer in input.dir", path)

    def _send_batch(self, send: list[tuple[Candidate, str]]) -> None:
        """Send files, small ones packed; every pack is produced before returning, so a
        file found alone is on its way at once."""
        try:
            for cand, wire in send:
                if self._stop:
                    raise _Stopping
                try:
                    self._send(cand, wire)
                except _PASS_THROUGH:
                    raise
                except Exception as exc:
                    self._send_failed(cand, wire, exc)
                self._poll(0)
        finally:
            self._flush_packs()

    def _forget(self, gone: list[str]) -> None:
        """Files recorded as sent that are no longer there: a tombstone each, so the
        state topic holds only what exists (compaction removes the rest)."""
        for path in gone:
            del self.sent[path]
            if not self.settings.dry_run:
                self.state.forget(path)
        if gone:
            log.info("state: forgot %d file(s) no longer in input.dir", len(gone))

    def _report_refused(self, refused: dict[str, tuple[Version, str]]) -> None:
        """Names that cannot be sent are failures, logged once per version of the file:
        a service scans every second and must not say the same thing every second."""
        for local, (version, why) in refused.items():
            if self._refused.get(local) != version:
                log.error(
                    "cannot send %r: %s; it is left as it is",
                    local,
                    why,
                    extra=self._event("file.skipped", local, outcome="skipped", cause=why),
                )
            self.stats.failed[local] = why
        for local in self._refused.keys() - refused.keys():
            self.stats.failed.pop(local, None)  # gone, renamed or sent since
        self._refused = {local: version for local, (version, _) in refused.items()}

    # -- one file ----------------------------------------------------------------

    def _send(self, cand: Candidate, wire: str) -> None:
        """Open the file once; a small one joins a pack, any other goes in chunks."""
        try:
            fd = os.open(cand.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # gone since the scan
        except OSError as exc:
            self._failed(cand.relative, f"cannot read it: {exc.strerror}")
            return
        try:
            before = identity(os.fstat(fd))
            if before != cand.identity:
                return  # changed since the scan: the next scan sees the new version
            packable = cand.size <= self.settings.pack_file_max_bytes > 0
            if packable and self._packs.fits(cand.size, wire):
                self._pack_open(cand, wire, fd, before)
            else:
                self._send_open(cand, wire, fd, before)
        finally:
            os.close(fd)

    @staticmethod
    def _unchanged(cand: Candidate, fd: int, before: Identity) -> bool:
        """Whether the file read through ``fd`` is still the version ``before``, and is
        still the file at its path."""
        try:
            on_disk: Identity | None = identity(os.stat(cand.path, follow_symlinks=False))
        except FileNotFoundError:
            on_disk = None
        return identity(os.fstat(fd)) == before and on_disk == before

    def _retry_when_stable(self, relative: str) -> None:
        self.stats.retries += 1
        self._retry_after[relative] = time.monotonic() + max(
            1.0, self.settings.file_minimum_age_ms / 1000
        )

    def _send_open(self, cand: Candidate, wire: str, fd: int, before: Identity) -> None:
        seal = self.encoder.new_file()
        transfer = seal.transfer if seal else new_transfer_id()
        inf = InFlight(cand, wire, transfer, read=before, codec=self.codec.stream(), seal=seal)
        self.inflight[wire] = inf
        name, size = self.settings.uploader_name, cand.size
        chunk = self.encoder.chunk_bytes(seal, wire, self.sizing.chunk_bytes)
        hasher = hashlib.sha256()
        offset = index = 0
        home = self.encoder.partition(name, wire, self.partitions)
        spread = self.settings.partitioning == "chunk" and self.partitions > 1
        chunks = chunk_count(size, chunk)
        log.info(
            "sending %r (%d bytes, %d chunks)",
            cand.relative,
            size,
            chunks,
            extra=self._event("file.sending", cand.relative, bytes=size, chunks=chunks),
        )
        self.display.start(wire, cand.relative, size)
        try:
            while offset < size:
                if self._stop:
                    raise _Stopping
                data = os.pread(fd, min(chunk, size - offset), offset)
                if not data:
                    break  # shrank: caught by the identity check below
                hasher.update(data)
                record = Chunk(inf.transfer, name, wire, index, offset, size, data, spread)
                partition = (home + index) % self.partitions if spread else home
                self._produce(record, inf, partition)
                offset += len(data)
                index += 1
                self.display.advance(wire, offset)
        except _Stopping:
            self._abort(inf, "the uploader was stopped")
            raise
        if offset != size or not self._unchanged(cand, fd, before):
            self._abort(inf, "the file changed while it was being read")
            return
        inf.sha256 = hasher.hexdigest()
        if _young(before) and not _reads_again_as(fd, size, inf.sha256):
            self._abort(inf, "the file changed while it was being read")
            return
        end = End(
            inf.transfer,
            name,
            wire,
            size=size,
            chunks=index,
            sha256=inf.sha256,
            mtime_ns=cand.mtime_ns,
            mode=stat.S_IMODE(cand.mode),
            spread=spread,
        )
        self._produce(end, inf, home)
        inf.closed = True
        self._maybe_finished(inf)

    # -- small files, packed -------------------------------------------------------

    def _pack_open(self, cand: Candidate, wire: str, fd: int, before: Identity) -> None:
        """Read a small file whole and add it to its partition's pack; the pack is
        produced when full or at the end of the batch."""
        data = os.pread(fd, cand.size + 1, 0)  # one byte more shows a file that grew
        if (
            len(data) != cand.size
            or not self._unchanged(cand, fd, before)
            or (_young(before) and os.pread(fd, cand.size + 1, 0) != data)
        ):
            # Nothing of it was produced: no abort record is needed, only a retry.
            self._retry_when_stable(cand.relative)
            log.info(
                "%r changed while it was read; it is sent once stable",
                cand.relative,
                extra=self._event(
                    "file.retry", cand.relative, outcome="retry", cause="changed while read"
                ),
            )
            return
        name = self.settings.uploader_name
        inf = InFlight(cand, wire, new_transfer_id(), read=before)
        inf.sha256 = hashlib.sha256(data).hexdigest()
        log.info(
            "sending %r (%d bytes, packed)",
            cand.relative,
            cand.size,
            extra=self._event("file.sending", cand.relative, bytes=cand.size, packed=True),
        )
        end = End(
            inf.transfer,
            name,
            wire,
            size=cand.size,
            chunks=1 if data else 0,
            sha256=inf.sha256,
            mtime_ns=cand.mtime_ns,
            mode=stat.S_IMODE(cand.mode),
        )
        self.inflight[wire] = inf
        partition = self.encoder.partition(name, wire, self.partitions)
        for ready in self._packs.add(partition, end, data, inf):
            self._flush_pack(*ready)

    def _flush_packs(self) -> None:
        for ready in self._packs.drain():
            self._flush_pack(*ready)

    def _flush_pack(self, partition: int, buffer: PackBuffer[InFlight]) -> None:
        infs = buffer.members
        if self.producer is not None:
            pack = Pack(self.settings.uploader_name, tuple(buffer.files))
            key, headers, value = self.encoder.encode(pack, self.codec, self.encoder.new_file())
            for inf in infs:
                inf.outstanding += 1
            try:
                self._send_record(key, headers, value, partition, self._pack_delivered(infs))
            except BaseException as exc:
                # Not queued: no acknowledgement will come, and every file of the pack
                # fails (to be retried) as one file would.
                if isinstance(exc, Exception) and not isinstance(exc, _Stopping):
                    why, stopped = _describe(exc), False
                else:
                    why, stopped = "the uploader was stopped", True
                log.debug("producing a pack failed", exc_info=True)
                for inf in infs:
                    inf.outstanding -= 1
                    inf.error = inf.error or why
                    inf.closed = True
                    self._maybe_finished(inf)
                if stopped or isinstance(exc, _PASS_THROUGH):
                    raise
                return
            log.debug("packed %d file(s) in one record on partition %d", len(infs), partition)
        for inf in infs:
            inf.produced += 1
            inf.closed = True
            self._maybe_finished(inf)

    def _pack_delivered(self, infs: list[InFlight]) -> Callable[[str | None], None]:
        def delivered(err: str | None) -> None:
            for inf in infs:
                self._delivered(inf, err)

        return delivered

    def _send_failed(self, cand: Candidate, wire: str, exc: Exception) -> None:
        """Whatever went wrong with one file (an unreadable name, an I/O error, a bug)
        abandons that file's transfer and reports the file; the others go on."""
        why = _describe(exc)
        log.debug("sending %r failed", cand.relative, exc_info=True)
        inf = self.inflight.get(wire)
        if inf is None or inf.candidate is not cand or inf.closed:
            self._failed(cand.relative, why)
            return
        inf.error = why
        if inf.produced:
            try:
                self._abort(inf, f"the uploader could not send it: {why}")
                return
            except _PASS_THROUGH:
                raise
            except Exception:
                log.debug("aborting %r failed", cand.relative, exc_info=True)
        inf.closed = True
        self._maybe_finished(inf)

    def _abort(self, inf: InFlight, reason: str) -> None:
        inf.aborted = reason
        if not self._stop or time.monotonic() - self._stop_at < SHUTDOWN_GRACE_SECONDS:
            name = self.settings.uploader_name
            rec = Abort(inf.transfer, name, inf.wire, reason)
            partition = self.encoder.partition(name, inf.wire, self.partitions)
            self._produce(rec, inf, partition, stopping_ok=True)
        inf.closed = True
        self._maybe_finished(inf)

    def _produce(
        self, record: Record, inf: InFlight, partition: int, stopping_ok: bool = False
    ) -> None:
        if self.producer is None:  # dry run
            return
        key, headers, value = self.encoder.encode(record, inf.codec, inf.seal)
        on_ack = functools.partial(self._delivered, inf)
        # Counted before it is queued: its acknowledgement may be served while sending.
        inf.outstanding += 1
        try:
            self._send_record(key, headers, value, partition, on_ack, stopping_ok)
        except BaseException:
            inf.outstanding -= 1  # not queued: no acknowledgement will come
            raise
        inf.produced += 1

    def _send_record(
        self,
        key: bytes,
        headers: list[tuple[str, str | bytes | None]],
        value: bytes,
        partition: int,
        on_ack: Callable[[str | None], None],
        stopping_ok: bool = False,
    ) -> None:
        assert self.producer is not None
        while True:
            try:
                self.producer.send(self.settings.topic, key, headers, value, on_ack, partition)
                return
            except QueueFull:
                # The bounded queue is full: let acknowledgements drain it (backpressure).
                self.heartbeat.beat()  # waiting here (an outage) is the loop turning
                self._poll(0.1)
                if self._stop and not stopping_ok and time.monotonic() - self._stop_at > 1:
                    raise _Stopping from None

    def _delivered(self, inf: InFlight, err: str | None) -> None:
        inf.outstanding -= 1
        if err is not None:
            inf.error = inf.error or err
        self._maybe_finished(inf)

    def _maybe_finished(self, inf: InFlight) -> None:
        if inf.closed and inf.outstanding == 0:
            self._finished.append(inf)

    def _poll(self, timeout: float) -> None:
        if self.producer is not None:
            self.producer.poll(timeout)
            self.transport.raise_if_fatal()
        elif timeout:
            time.sleep(timeout)
        while self._finished:
            inf = self._finished.pop()
            try:
                self._complete(inf)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                log.debug("completing %r failed", inf.candidate.relative, exc_info=True)
                self._failed(inf.candidate.relative, _describe(exc))
        self._progress()

    def _complete(self, inf: InFlight) -> None:
        cand = inf.candidate
        self.inflight.pop(inf.wire, None)
        self.display.finish(inf.wire, cand.size, inf.error is None and inf.aborted is None)
        if inf.error is not None:
            self._failed(cand.relative, inf.error)
            return
        if inf.aborted is not None:
            self.stats.aborted += 1
            log.warning(
                "abandoned %r: %s; it is sent again once stable",
                cand.relative,
                inf.aborted,
                extra=self._transfer_event("file.aborted", inf, "aborted", cause=inf.aborted),
            )
            self._retry_when_stable(cand.relative)
            if self.once and not self._stop:
                self.stats.failed[cand.relative] = inf.aborted
            return
        self.stats.failed.pop(cand.relative, None)
        self._retry_after.pop(cand.relative, None)
        if self._after_upload(inf):
            self.sent[inf.wire] = version_of(cand.size, cand.mtime_ns)
            if not self.settings.dry_run:
                self.faults("state")
                self.state.save(
                    inf.wire, SentRecord(cand.size, cand.mtime_ns, inf.sha256, inf.transfer)
                )
        self.stats.sent += 1
        self.stats.sent_bytes += cand.size
        self.stats.last_sent = time.time()
        log.info(
            "sent %r (%d bytes)",
            cand.relative,
            cand.size,
            extra=self._transfer_event("file.sent", inf, "sent", sha256=inf.sha256),
        )

    def _event(self, name: str, relative: str, **fields: Any) -> dict[str, Any]:
        """The fields of a log line about one file of this uploader."""
        return event(name, uploader=self.settings.uploader_name, path=relative, **fields)

    def _transfer_event(
        self, name: str, inf: InFlight, outcome: str, **fields: Any
    ) -> dict[str, Any]:
        """:meth:`_event` for the end of a transfer: its size and how long it took."""
        took = round(time.monotonic() - inf.started, 3)
        size = inf.candidate.size
        return self._event(
            name, inf.candidate.relative, bytes=size, duration_s=took, outcome=outcome, **fields
        )

    def _failed(self, relative: str, why: str) -> None:
        log.error(
            "failed to send %r: %s; retrying in %.0f s",
            relative,
            why,
            FAILED_RETRY_SECONDS,
            extra=self._event(
                "file.failed", relative, outcome="failed", cause=why, retry_s=FAILED_RETRY_SECONDS
            ),
        )
        self.stats.failed[relative] = why
        self.stats.failures += 1
        self.stats.retries += 1
        self._retry_after[relative] = time.monotonic() + FAILED_RETRY_SECONDS

    def _after_upload(self, inf: InFlight) -> bool:
        """Rename or delete the file that was sent. False when the file at that path is no
        longer the version that was read (a writer replaced or rewrote it before the
        acknowledgements): then it is left alone and not recorded as sent, so a later
        scan sends whatever is there now."""
        action = self.settings.after_upload
        if action == "keep" or self.settings.dry_run:
            return True
        cand = inf.candidate
        self.faults("after.upload")
        try:
            now: Identity | None = identity(os.lstat(cand.path))
        except FileNotFoundError:
            now = None
        if now != inf.read:
            log.warning(
                "%r changed after it was read: after.upload=%s not applied; what is there "
                "now is sent by a later scan",
                cand.relative,
                action,
                extra=self._event("file.changed", cand.relative, cause="changed after read"),
            )
            return False
        try:
            if action == "rename":
                cand.path.rename(cand.path.with_name(cand.path.name + ".FINISHED"))
            else:
                cand.path.unlink()
        except OSError as exc:
            log.warning(
                "after.upload=%s failed for %r: %s",
                action,
                cand.relative,
                exc.strerror,
                extra=self._event("file.after_upload_failed", cand.relative, cause=exc.strerror),
            )
        return True

    # -- stopping ----------------------------------------------------------------

    def stop(self) -> None:
        """Finish in-flight work and return from :meth:`run` (what SIGTERM does)."""
        self._stop = True
        self._stop_at = time.monotonic()

    def _install_signal_handlers(self) -> dict[int, Any]:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
            self.stop()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    def _drain(self) -> None:
        """Wait for acknowledgements (bounded when stopping), then flush state records."""
        if self.producer is None:
            self._poll(0)
            return
        while self.inflight:
            if self._stop and time.monotonic() - self._stop_at > SHUTDOWN_GRACE_SECONDS:
                log.warning(
                    "%d file(s) unacknowledged at shutdown; they are sent again next time",
                    len(self.inflight),
                )
                break
            self._poll(0.2)
        remaining = self.producer.flush(SHUTDOWN_GRACE_SECONDS if self._stop else 300)
        self._poll(0)
        if remaining:
            log.warning("%d record(s) not acknowledged at exit", remaining)

    # -- reporting and test files ------------------------------------------------

    def _progress(self) -> None:
        """A line every PROGRESS_EVERY_SECONDS, also while blocked on a Kafka outage."""
        self.display.tick()
        now = time.monotonic()
        if now < self._next_progress:
            return
        self._next_progress = now + PROGRESS_EVERY_SECONDS
        producer = self.producer
        log.info(
            "progress: %d file(s), %.1f MiB sent; %d file(s) in flight, %d record(s) queued%s",
            self.stats.sent,
            self.stats.sent_bytes / 2**20,
            len(self.inflight),
            producer.queued() if producer is not None else 0,
            "; Kafka unreachable" if producer is not None and self.transport.unreachable() else "",
        )

    def _summary(self) -> None:
        took = time.monotonic() - self.stats.started
        log.info(
            "done: %d file(s), %.1f MiB in %.1f s; %d failed, %d abandoned",
            self.stats.sent,
            self.stats.sent_bytes / 2**20,
            took,
            len(self.stats.failed),
            self.stats.aborted,
        )
        if self.once:  # a bounded run ends on its summary line
            failures = {"failed": len(self.stats.failed), "abandoned": self.stats.aborted}
            text = summary_text(
                self.stats.sent, self.stats.sent_bytes, took, failures, "all acknowledged"
            )
            log.info("%s", text, extra=event("run.summary", files=self.stats.sent, **failures))

    def _write_test_file(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        final = self.input_dir / f"streamsend-test-{stamp}.bin"
        tmp = self.input_dir / f".{final.name}.tmp"
        remaining = self.settings.generate_test_file_bytes
        with tmp.open("wb") as fp:
            while remaining:
                piece = os.urandom(min(remaining, 1 << 20))
                fp.write(piece)
                remaining -= len(piece)
        tmp.rename(final)
        log.info("generated test file %s", final.name)


# A write call sets mtime and ctime when it starts, not when it ends, so a file opened
# while a write is in progress shows unchanged metadata before and after a read that
# mixed two versions. A file modified this recently (its writer may still be at work) is
# read a second time, and sent only if both reads agree. With file.minimum.age.ms at its
# default (5 s) no file is this young; with 0 (pick-up within milliseconds) most are.
YOUNG_NS = 2_000_000_000
READ_AGAIN_BLOCK = 1 << 20


def _young(before: Identity) -> bool:
    # mtime, not ctime: every write call sets it when it starts (ctime also moves with a
    # chmod, or when a copier such as cp -p puts an old mtime back).
    return time.time_ns() - before[1] < YOUNG_NS


def _reads_again_as(fd: int, size: int, sha256: str) -> bool:
    """Whether ``fd`` reads, once more, as ``size`` bytes with digest ``sha256``."""
    hasher = hashlib.sha256()
    offset = 0
    while offset < size:
        data = os.pread(fd, min(READ_AGAIN_BLOCK, size - offset), offset)
        if not data:
            return False
        hasher.update(data)
        offset += len(data)
    return not os.pread(fd, 1, size) and hasher.hexdigest() == sha256


def _lock_path(input_dir: Path) -> Path:
    """The lock lives in input.dir, where every uploader of it (on any host sharing the
    filesystem) sees it. A read-only input.dir (media, snapshots) cannot hold it: then
    it lives in this user's cache, which still guards against uploaders on this host."""
    locks = Path(platformdirs.user_cache_dir("streamsend")) / "locks"
    return local_file(input_dir, ".streamsend-uploader.lock", locks)
