"""The downloader service: consume the topic, rebuild files, deliver them atomically.

Offsets are committed only after a checkpoint has made every byte consumed so far
durable in staging (or delivered), so a crash replays at most what was not yet on disk,
and replayed records of finished transfers are recognised and ignored.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streamsend.config.settings import DownloaderSettings
from streamsend.download.reassembly import TransferProgress
from streamsend.download.staging import (
    DiskFull,
    StagedFile,
    StagingArea,
    Unstorable,
    VerificationFailed,
)
from streamsend.errors import ProtocolError, TransferIncomplete, UnsupportedVersion
from streamsend.lockfile import DirectoryLock
from streamsend.transport.kafka import ConnectionWatch, client_config
from streamsend.wire.paths import UnsafePath, safe_relative_parts, safe_uploader_name
from streamsend.wire.protocol import Abort, Chunk, NotStreamsend, decode
from streamsend.wire.protocol import Message as Record

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 30.0


def default_group_id(output_dir: Path) -> str:
    """One consumer group per downloader (host + output directory), so every downloader
    mirrors every file and a restarted one continues where it stopped."""
    digest = hashlib.sha256(str(output_dir.resolve()).encode()).hexdigest()[:12]
    return f"streamsend-downloader-{socket.gethostname()}-{digest}"


@dataclass
class DownloadStats:
    delivered: int = 0
    delivered_bytes: int = 0
    rejected: int = 0
    aborted: int = 0
    skipped_foreign: int = 0
    skipped_invalid: int = 0
    skipped_version: int = 0
    unsafe_paths: int = 0
    duplicates: int = 0
    disk_full_pauses: int = 0


class Downloader:
    def __init__(self, settings: DownloaderSettings) -> None:
        self.settings = settings
        self.stats = DownloadStats()
        self.output_dir = settings.output_dir.expanduser().resolve()
        self.staging = StagingArea(self.output_dir)
        self.lock = DirectoryLock(
            self.staging.root / "downloader.lock",
            f"output.dir {str(self.output_dir)!r} is in use by another downloader",
        )
        self._bad_transfers: set[str] = set()
        self.watch = ConnectionWatch("downloader")
        self._pending: dict[tuple[str, int], int] = {}
        self._stop = False
        self._last_checkpoint = time.monotonic()
        self._assigned_at: float | None = None

    # -- the loop ----------------------------------------------------------------

    def run(self) -> DownloadStats:
        self.lock.acquire()
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> DownloadStats:
        for staged in self.staging.recover():
            log.info("resuming %s/%s from staging", staged.progress.uploader, staged.progress.path)
        consumer = Consumer(self._consumer_config())
        self._install_signal_handlers()
        try:
            consumer.subscribe(
                [self.settings.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke(consumer),
            )
            self._loop(consumer)
            self._checkpoint(consumer)
        finally:
            consumer.close()
            self.staging.close()
        return self.stats

    def _consumer_config(self) -> dict[str, Any]:
        group = default_group_id(self.output_dir)
        defaults = {
            "group.id": group,
            # Static membership: a restarted downloader (same host and output.dir) takes
            # its partitions back at once instead of waiting out the dead member's session.
            "group.instance.id": group,
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
        }
        conf = client_config(self.settings, "consumer", defaults, self.watch)
        conf["enable.auto.commit"] = False  # we commit only what is durable
        log.info("consumer group %s", conf["group.id"])
        return conf

    def _loop(self, consumer: Consumer) -> None:
        idle_limit = self.settings.idle_exit_ms / 1000
        commit_every = self.settings.commit_interval_ms / 1000
        expiry = self.settings.partial_file_expiry_ms / 1000
        last_message = time.monotonic()
        last_expiry = time.monotonic()
        next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
        while not self._stop:
            msg = consumer.poll(0.5)
            now = time.monotonic()
            if self._assigned_at is not None:
                # The idle clock starts once partitions are assigned: joining the
                # group is not idleness.
                last_message = max(last_message, self._assigned_at)
                self._assigned_at = None
            if msg is not None:
                err = msg.error()
                if err is None:
                    last_message = now
                    self.watch.reached()
                    if not self._handle_when_space(consumer, msg):
                        break  # stopped while waiting for disk space; not committed
                    topic, partition, offset = _position(msg)
                    self._pending[(topic, partition)] = offset + 1
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err.str())
            self.watch.raise_if_fatal()
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_SECONDS
                log.info(
                    "progress: %d file(s), %.1f MiB delivered; %d in staging%s",
                    self.stats.delivered,
                    self.stats.delivered_bytes / 2**20,
                    len(self.staging.files),
                    "; Kafka unreachable" if self.watch.unreachable_since is not None else "",
                )
            if now - self._last_checkpoint >= commit_every:
                self._checkpoint(consumer)
            if now - last_expiry >= min(60.0, expiry):
                last_expiry = now
                for progress in self.staging.expire(expiry):
                    log.warning(
                        "abandoned %s/%s: nothing received for %.0f s (partial.file.expiry.ms)",
                        progress.uploader,
                        progress.path,
                        expiry,
                    )
            if idle_limit and now - last_message >= idle_limit:
                log.info("no message for %.1f s: exiting (idle.exit.ms)", idle_limit)
                break
        if self.staging.files and idle_limit:
            self._checkpoint(consumer)
            names = ", ".join(
                repr(f"{s.progress.uploader}/{s.progress.path}")
                for s in self.staging.files.values()
            )
            raise TransferIncomplete(f"{len(self.staging.files)} file(s) incomplete: {names}")

    def _handle_when_space(self, consumer: Consumer, msg: Message) -> bool:
        """Handle one record; when the disk is full, pause consumption and retry until
        space returns. False when asked to stop before the record could be stored."""
        paused_at: float | None = None
        try:
            while True:
                try:
                    self._handle(msg)
                except DiskFull as full:
                    if paused_at is None:
                        paused_at = time.monotonic()
                        self.stats.disk_full_pauses += 1
                        consumer.pause(consumer.assignment())
                        log.warning(
                            "output.dir %r is full: %d more bytes needed for %s "
                            "(%d free); consumption paused until there is room",
                            str(self.output_dir),
                            full.needed,
                            full.what,
                            self.staging.free_bytes(),
                        )
                    if not self._wait_for_space(consumer):
                        return False
                    continue
                return True
        finally:
            if paused_at is not None:
                consumer.resume(consumer.assignment())
                if not self._stop:
                    log.warning(
                        "output.dir has room again: resumed after %.0f s",
                        time.monotonic() - paused_at,
                    )

    def _wait_for_space(self, consumer: Consumer, seconds: float = 2.0) -> bool:
        """Keep the group session alive while paused; True to retry, False to stop."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop:
                return False
            extra = consumer.poll(0.5)
            if extra is not None and extra.error() is None:
                # A record fetched before the pause: rewind so it is read again later.
                consumer.seek(TopicPartition(*_position(extra)))
        return not self._stop

    def _checkpoint(self, consumer: Consumer) -> None:
        try:
            self.staging.checkpoint()
        except DiskFull as full:
            log.warning("checkpoint postponed, output.dir is full (%s)", full)
            return
        if self._pending:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:
                log.warning("offset commit failed (records will be replayed): %s", exc)
            else:
                self._pending.clear()
        self._last_checkpoint = time.monotonic()

    def _on_assign(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        log.info("assigned %d partition(s) of %s", len(parts), self.settings.topic)
        self._assigned_at = time.monotonic()

    def _on_revoke(self, consumer: Consumer) -> Callable[[Consumer, list[TopicPartition]], None]:
        def revoke(_c: Consumer, _parts: list[TopicPartition]) -> None:
            self._checkpoint(consumer)

        return revoke

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing", signal.Signals(signum).name)
            self._stop = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    # -- one record --------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        try:
            record = decode(_headers(msg), msg.value())
        except NotStreamsend:
            self.stats.skipped_foreign += 1
            log.warning("skipping %s: not a Streamsend record", where)
            return
        except UnsupportedVersion as exc:
            self.stats.skipped_version += 1
            log.error("skipping %s: %s", where, exc)
            return
        except ProtocolError as exc:
            self.stats.skipped_invalid += 1
            log.warning("skipping %s: %s", where, exc)
            return
        if record.transfer in self.staging.done:
            self.stats.duplicates += 1
            return
        if record.transfer in self._bad_transfers:
            return  # already reported once
        try:
            parts = self._checked_path(record)
            self._apply(record, parts)
        except UnsafePath as exc:
            self.stats.unsafe_paths += 1
            if len(self._bad_transfers) > 100_000:
                self._bad_transfers.clear()  # bounded: forgetting only costs a repeated log line
            self._bad_transfers.add(record.transfer)
            log.error("rejecting %s: unsafe path %r: %s", where, record.path, exc)
            self.staging.discard(record.transfer)
        except (ProtocolError, Unstorable) as exc:
            self.stats.skipped_invalid += 1
            log.warning("skipping %s: %s", where, exc)
            self._reject(record, str(exc))

    def _checked_path(self, record: Record) -> tuple[str, ...]:
        safe_uploader_name(record.uploader)
        return safe_relative_parts(record.path)

    def _apply(self, record: Record, parts: tuple[str, ...]) -> None:
        if isinstance(record, Abort):
            self.stats.aborted += 1
            log.info(
                "%s/%s: upload abandoned by the uploader (%s)",
                record.uploader,
                record.path,
                record.reason,
            )
            # Remembered as finished: a chunk of it arriving late (from another partition)
            # must not start a staging file that would only wait to expire.
            self.staging.discard(record.transfer, remember=True)
            return
        staged = self.staging.files.get(record.transfer)
        if staged is None:
            size = record.size
            staged = self.staging.open(
                TransferProgress(record.transfer, record.uploader, record.path, size)
            )
        if isinstance(record, Chunk):
            if staged.progress.is_new_chunk(record):
                # Bytes first, bookkeeping second: a failed write (disk full) must not
                # leave the range recorded as received.
                self.staging.write(staged, record.offset, record.data)
                staged.progress.accept_chunk(record)
            else:
                self.stats.duplicates += 1
        else:
            staged.progress.accept_end(record)
            staged.last_activity = time.time()
        if staged.progress.complete():
            self._deliver(staged, parts)

    def _deliver(self, staged: StagedFile, parts: tuple[str, ...]) -> None:
        end = staged.progress.end
        assert end is not None
        try:
            final = self.staging.finalize(staged, end, parts)
        except (VerificationFailed, UnsafePath) as exc:
            self._reject(end, str(exc))
            return
        self.stats.delivered += 1
        self.stats.delivered_bytes += end.size
        log.info("delivered %r (%d bytes, sha256 %s)", str(final), end.size, end.sha256[:16])

    def _reject(self, record: Record, reason: str) -> None:
        if record.transfer not in self.staging.files:
            return
        target = self.staging.reject(record.transfer, record.uploader, record.path, reason)
        self.stats.rejected += 1
        log.error("rejected %s/%s: %s (kept as %s)", record.uploader, record.path, reason, target)


def _headers(msg: Message) -> list[tuple[str, bytes | None]]:
    """Consumed headers as (name, bytes) pairs, whatever shape the client gives."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]


def _position(msg: Message) -> tuple[str, int, int]:
    return msg.topic() or "", msg.partition() or 0, msg.offset() or 0
