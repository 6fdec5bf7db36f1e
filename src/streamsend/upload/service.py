"""The uploader service: watch input.dir, stream eligible files as chunks, remember them.

Files are read once, in chunk-sized pieces, hashing as they go: memory holds at most
the producer's bounded queue, never a whole file. A file whose size, modification time
or inode changes while it is read is abandoned with an Abort record and sent again once
it is stable, so a torn version is never delivered.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import signal
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

import platformdirs
from confluent_kafka import KafkaError, Message, Producer

from streamsend.config.settings import UploaderSettings
from streamsend.errors import EnvironmentProblem, TransferIncomplete
from streamsend.lockfile import DirectoryLock
from streamsend.transport.base import TopicSpec
from streamsend.transport.kafka import Admin, ConnectionWatch, client_config
from streamsend.upload.scanner import Candidate, walk
from streamsend.upload.selection import FileRules, refuse_system_dir
from streamsend.upload.state import (
    STATE_TOPIC_CONFIG,
    KafkaStateStore,
    MemoryStateStore,
    SentRecord,
    StateStore,
    Version,
    version_of,
)
from streamsend.wire.chunking import (
    ChunkSizing,
    automatic_chunk_size,
    chunk_count,
    fixed_chunk_size,
)
from streamsend.wire.protocol import Abort, Chunk, End, encode, new_transfer_id
from streamsend.wire.protocol import Message as Record

log = logging.getLogger(__name__)

STOCK_MESSAGE_LIMIT = 1_048_588  # Kafka's default message.max.bytes, assumed in dry runs
SHUTDOWN_GRACE_SECONDS = 30.0
PROGRESS_EVERY_SECONDS = 30.0
TEST_FILE_EVERY_SECONDS = 10.0
FAILED_RETRY_SECONDS = 10.0


class _Stopping(Exception):
    """Raised inside a send when the uploader was asked to stop."""


@dataclass
class InFlight:
    """One transfer whose records are produced but not all acknowledged yet."""

    candidate: Candidate
    transfer: str
    outstanding: int = 0
    error: str | None = None
    closed: bool = False
    aborted: str | None = None
    sha256: str = ""


@dataclass
class UploadStats:
    sent: int = 0
    sent_bytes: int = 0
    # Files whose latest attempt failed, with why; a later success removes them.
    failed: dict[str, str] = field(default_factory=dict)
    aborted: int = 0
    skipped_unchanged: int = 0
    started: float = field(default_factory=time.monotonic)


class Uploader:
    def __init__(self, settings: UploaderSettings, once: bool = False) -> None:
        self.settings = settings
        self.once = once
        self.stats = UploadStats()
        self.input_dir = settings.input_dir.expanduser().resolve()
        self.rules = FileRules.from_settings(
            settings.input_file_pattern, settings.file_minimum_age_ms, settings.file_maximum_age_ms
        )
        self.watch = ConnectionWatch("uploader")
        self.producer: Producer | None = None
        self.state: StateStore = MemoryStateStore()
        self.sent: dict[str, Version] = {}
        self.inflight: dict[str, InFlight] = {}
        self._finished: list[InFlight] = []
        self._retry_after: dict[str, float] = {}
        self._stop = False
        self._stop_at = 0.0
        self._next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
        self.sizing = ChunkSizing(0, 0, "")

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
            return
        admin = Admin(s, self.watch)
        brokers = admin.wait_for_cluster(lambda: self._stop)
        replication = s.topic_replication_factor or min(3, brokers)
        admin.ensure_topic(s.topic, TopicSpec(s.topic_partitions, replication, {}))
        admin.ensure_topic(s.processing_state_topic, TopicSpec(1, replication, STATE_TOPIC_CONFIG))
        broker_limit, topic_limit = admin.message_limits(s.topic)
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
        self.producer = Producer(self._producer_config())
        self.state = KafkaStateStore(
            s.processing_state_topic,
            s.topic,
            s.uploader_name,
            self.producer,
            client_config(s, "consumer", {}, self.watch),
        )

    def _producer_config(self) -> dict[str, Any]:
        limit = self.sizing.message_limit
        defaults = {
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
        }
        return client_config(self.settings, "producer", defaults, self.watch)

    # -- the loop ----------------------------------------------------------------

    def run(self) -> UploadStats:
        self._check_input_dir()
        lock = DirectoryLock(
            _lock_path(self.input_dir),
            f"input.dir {str(self.input_dir)!r} is in use by another uploader",
        )
        lock.acquire()
        self._install_signal_handlers()
        try:
            self._connect()
            self.sent = self.state.load()
            self._loop()
        finally:
            self._drain()
            lock.release()
        self._summary()
        if self.stats.failed:
            names = ", ".join(f"{name!r} ({why})" for name, why in self.stats.failed.items())
            if self.once:
                raise TransferIncomplete(f"{len(self.stats.failed)} file(s) not sent: {names}")
            # A service asked to stop stops cleanly; what failed is retried next time.
            log.warning("stopping with %d file(s) not sent yet: %s", len(self.stats.failed), names)
        return self.stats

    def _loop(self) -> None:
        next_scan = 0.0
        next_test_file = time.monotonic()
        while not self._stop:
            now = time.monotonic()
            if self.settings.generate_test_file_bytes and now >= next_test_file:
                self._write_test_file()
                next_test_file = now + TEST_FILE_EVERY_SECONDS
            if now >= next_scan:
                try:
                    self._scan_and_send()
                except _Stopping:
                    break
                next_scan = time.monotonic() + self.settings.scan_interval_ms / 1000
                if self.once:
                    break
            self._poll(0.1)

    def _eligible(self) -> list[Candidate]:
        now_ns = time.time_ns()
        wanted = []
        for cand in walk(self.input_dir):
            if not self.rules.wanted_name(cand.relative) or cand.relative in self.inflight:
                continue
            if self.rules.too_old(cand.mtime_ns, now_ns) or not self.rules.old_enough(
                cand.mtime_ns, now_ns
            ):
                continue
            if self._retry_after.get(cand.relative, 0) > time.monotonic():
                continue
            if self.sent.get(cand.relative) == version_of(cand.size, cand.mtime_ns):
                continue
            wanted.append(cand)
        wanted.sort(key=lambda c: (c.mtime_ns, c.relative))
        return wanted

    def _scan_and_send(self) -> None:
        for cand in self._eligible():
            if self._stop:
                raise _Stopping
            self._send(cand)
            self._poll(0)

    # -- one file ----------------------------------------------------------------

    def _send(self, cand: Candidate) -> None:
        try:
            fd = os.open(cand.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # gone since the scan
        except OSError as exc:
            self._failed(cand.relative, f"cannot read it: {exc.strerror}")
            return
        try:
            self._send_open(cand, fd)
        finally:
            os.close(fd)

    def _send_open(self, cand: Candidate, fd: int) -> None:
        before = os.fstat(fd)
        if _identity(before) != (cand.size, cand.mtime_ns, cand.inode):
            return  # changed since the scan: the next scan sees the new version
        inf = InFlight(cand, new_transfer_id())
        self.inflight[cand.relative] = inf
        name, path, size = self.settings.uploader_name, cand.relative, before.st_size
        chunk = self.sizing.chunk_bytes
        hasher = hashlib.sha256()
        offset = index = 0
        log.info("sending %r (%d bytes, %d chunks)", path, size, chunk_count(size, chunk))
        try:
            while offset < size:
                if self._stop:
                    raise _Stopping
                data = os.pread(fd, min(chunk, size - offset), offset)
                if not data:
                    break  # shrank: caught by the identity check below
                hasher.update(data)
                self._produce(Chunk(inf.transfer, name, path, index, offset, size, data), inf)
                offset += len(data)
                index += 1
        except _Stopping:
            self._abort(inf, "the uploader was stopped")
            raise
        after = os.fstat(fd)
        try:
            on_disk = os.stat(cand.path, follow_symlinks=False)
        except FileNotFoundError:
            on_disk = None
        if (
            offset != size
            or _identity(after) != _identity(before)
            or on_disk is None
            or _identity(on_disk) != _identity(before)
        ):
            self._abort(inf, "the file changed while it was being read")
            return
        inf.sha256 = hasher.hexdigest()
        end = End(
            inf.transfer,
            name,
            path,
            size=size,
            chunks=index,
            sha256=inf.sha256,
            mtime_ns=before.st_mtime_ns,
            mode=stat.S_IMODE(before.st_mode),
        )
        self._produce(end, inf)
        inf.closed = True
        self._maybe_finished(inf)

    def _abort(self, inf: InFlight, reason: str) -> None:
        inf.aborted = reason
        if not self._stop or time.monotonic() - self._stop_at < SHUTDOWN_GRACE_SECONDS:
            rec = Abort(inf.transfer, self.settings.uploader_name, inf.candidate.relative, reason)
            self._produce(rec, inf, stopping_ok=True)
        inf.closed = True
        self._maybe_finished(inf)

    def _produce(self, record: Record, inf: InFlight, stopping_ok: bool = False) -> None:
        if self.producer is None:  # dry run
            return
        key, headers, value = encode(record)
        callback = functools.partial(self._delivered, inf)
        while True:
            try:
                self.producer.produce(
                    self.settings.topic, value=value, key=key, headers=headers, on_delivery=callback
                )
                break
            except BufferError:
                # The bounded queue is full: let deliveries drain it (backpressure).
                self._poll(0.1)
                if self._stop and not stopping_ok and time.monotonic() - self._stop_at > 1:
                    raise _Stopping from None
        inf.outstanding += 1
        self.producer.poll(0)

    def _delivered(self, inf: InFlight, err: KafkaError | None, _msg: Message) -> None:
        inf.outstanding -= 1
        if err is not None:
            inf.error = inf.error or err.str()
        else:
            self.watch.reached()
        self._maybe_finished(inf)

    def _maybe_finished(self, inf: InFlight) -> None:
        if inf.closed and inf.outstanding == 0:
            self._finished.append(inf)

    def _poll(self, timeout: float) -> None:
        if self.producer is not None:
            self.producer.poll(timeout)
        elif timeout:
            time.sleep(timeout)
        self.watch.raise_if_fatal()
        while self._finished:
            self._complete(self._finished.pop())
        self._progress()

    def _complete(self, inf: InFlight) -> None:
        cand = inf.candidate
        self.inflight.pop(cand.relative, None)
        if inf.error is not None:
            self._failed(cand.relative, inf.error)
            return
        if inf.aborted is not None:
            self.stats.aborted += 1
            log.warning(
                "abandoned %r: %s; it is sent again once stable", cand.relative, inf.aborted
            )
            self._retry_after[cand.relative] = time.monotonic() + max(
                1.0, self.settings.file_minimum_age_ms / 1000
            )
            if self.once and not self._stop:
                self.stats.failed[cand.relative] = inf.aborted
            return
        self.stats.failed.pop(cand.relative, None)
        self._retry_after.pop(cand.relative, None)
        self.sent[cand.relative] = version_of(cand.size, cand.mtime_ns)
        if not self.settings.dry_run:
            self.state.save(
                cand.relative, SentRecord(cand.size, cand.mtime_ns, inf.sha256, inf.transfer)
            )
        self.stats.sent += 1
        self.stats.sent_bytes += cand.size
        log.info("sent %r (%d bytes)", cand.relative, cand.size)
        self._after_upload(cand)

    def _failed(self, relative: str, why: str) -> None:
        log.error("failed to send %r: %s; retrying in %.0f s", relative, why, FAILED_RETRY_SECONDS)
        self.stats.failed[relative] = why
        self._retry_after[relative] = time.monotonic() + FAILED_RETRY_SECONDS

    def _after_upload(self, cand: Candidate) -> None:
        action = self.settings.after_upload
        if action == "keep" or self.settings.dry_run:
            return
        try:
            if action == "rename":
                cand.path.rename(cand.path.with_name(cand.path.name + ".FINISHED"))
            else:
                cand.path.unlink()
        except OSError as exc:
            log.warning("after.upload=%s failed for %r: %s", action, cand.relative, exc.strerror)

    # -- stopping ----------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
            self._stop = True
            self._stop_at = time.monotonic()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

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
        now = time.monotonic()
        if now < self._next_progress:
            return
        self._next_progress = now + PROGRESS_EVERY_SECONDS
        queued = len(self.producer) if self.producer is not None else 0
        log.info(
            "progress: %d file(s), %.1f MiB sent; %d file(s) in flight, %d record(s) queued%s",
            self.stats.sent,
            self.stats.sent_bytes / 2**20,
            len(self.inflight),
            queued,
            "; Kafka unreachable" if self.watch.unreachable_since is not None else "",
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


def _lock_path(input_dir: Path) -> Path:
    """The lock lives in input.dir, where every uploader of it (on any host sharing the
    filesystem) sees it. A read-only input.dir (media, snapshots) cannot hold it: then
    it lives in this user's cache, which still guards against uploaders on this host."""
    if os.access(input_dir, os.W_OK):
        return input_dir / ".streamsend-uploader.lock"
    digest = hashlib.sha256(str(input_dir).encode()).hexdigest()[:24]
    locks = Path(platformdirs.user_cache_dir("streamsend")) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / f"uploader-{digest}.lock"


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)
