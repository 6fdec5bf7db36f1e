"""What every section of the suite shares: measured child processes, test data,
waiting for deliveries, byte-for-byte verification and topics.

Nothing here holds a file's contents in memory (data is written and hashed in pieces),
and every measured process starts through ``launch.py``: on Linux a process's
``ru_maxrss`` starts from the peak of the process it was forked from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

KiB, MiB, GiB = 2**10, 2**20, 2**30
UNITS = {"K": KiB, "M": MiB, "G": GiB}
PIECE = 4 * MiB  # write/hash granularity: the suite never holds more of a file than this


class BenchFailure(Exception):
    """A measurement that cannot be trusted: a side failed, a file is missing or differs."""


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``512KiB``, ``1000`` -> bytes."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    if cleaned and cleaned[-1] in UNITS:
        return int(float(cleaned[:-1]) * UNITS[cleaned[-1]])
    return int(cleaned)


def human_size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % (size // 4) == 0:
            return f"{n / size:g} {unit}"
    return f"{n:,} B"


def streamsend_cli() -> list[str]:
    """The installed ``streamsend`` entry point next to this interpreter (the real CLI)."""
    script = Path(sys.executable).parent / "streamsend"
    return [str(script)] if script.exists() else [sys.executable, "-m", "streamsend"]


def unique(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:10]}"


# -- child processes ---------------------------------------------------------------


@dataclass(frozen=True)
class Exit:
    code: int
    seconds: float  # from start to exit
    peak_rss: int  # bytes, the kernel's ru_maxrss of that one process


LAUNCHER = Path(__file__).resolve().parent / "launch.py"


class Child:
    """One process, started now through ``launch.py`` (so that its peak RSS is its own).
    Its output goes to a log file, each line prefixed with the seconds since start; the
    first time a line contains one of ``marks`` is kept (monotonic clock, the same in
    every process on Linux)."""

    live: ClassVar[set[Child]] = set()

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log: Path,
        marks: Iterable[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log = log
        self.marks: dict[str, float] = {}
        self._wanted = tuple(marks)
        self._tail: deque[str] = deque(maxlen=12)
        self.exit: Exit | None = None
        log.parent.mkdir(parents=True, exist_ok=True)
        self._result = log.with_suffix(".exit.json")
        self._result.unlink(missing_ok=True)
        self._fp = log.open("w", encoding="utf-8")
        self._fp.write("$ " + " ".join(self.cmd) + "\n")
        self._fp.flush()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-S", str(LAUNCHER), str(self._result), *self.cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,  # one process group: kill() reaches the command too
        )
        Child.live.add(self)
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            self._fp.write(f"{now - self.started:9.3f} {line}")
            self._tail.append(line.rstrip())
            for mark in self._wanted:
                if mark not in self.marks and mark in line:
                    self.marks[mark] = now
        self._fp.close()

    def mark(self, text: str) -> float | None:
        """Seconds from start to the first line containing ``text`` (None if never)."""
        at = self.marks.get(text)
        return None if at is None else at - self.started

    def poll(self) -> Exit | None:
        if self.exit is None:
            pid, status, _ = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self._reaped(status)
        return self.exit

    def _reaped(self, status: int) -> None:
        took = time.monotonic() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._reader.join(10)
        try:
            found = json.loads(self._result.read_text())
            code, peak = int(found["code"]), int(found["maxrss_kib"]) * 1024
        except (OSError, ValueError, KeyError):  # the launcher itself was killed
            code, peak = self.proc.returncode, 0
        self.exit = Exit(code, took, peak)
        Child.live.discard(self)

    def wait(self, timeout: float) -> Exit:
        deadline = time.monotonic() + timeout
        while (done := self.poll()) is None:
            if time.monotonic() > deadline:
                self.kill()
                raise BenchFailure(f"{self.name} still ran after {timeout:.0f} s; {self.where()}")
            time.sleep(0.02)
        return done

    def stop(self, timeout: float = 60) -> Exit:
        """SIGTERM (a clean stop for the services), then wait."""
        if self.exit is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def pause(self, resume: bool = False) -> None:
        """SIGSTOP (or SIGCONT) the process and its launcher."""
        if self.exit is None:
            os.killpg(self.proc.pid, signal.SIGCONT if resume else signal.SIGSTOP)

    def kill(self) -> None:
        if self.exit is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            _, status, _ = os.wait4(self.proc.pid, 0)
            self._reaped(status)

    def expect(self, exit: Exit, codes: Sequence[int] = (0,)) -> Exit:
        if exit.code not in codes:
            raise BenchFailure(f"{self.name} exited with {exit.code}; {self.where()}")
        return exit

    def finish(self, timeout: float) -> Exit:
        """Wait for a bounded run and insist on success."""
        return self.expect(self.wait(timeout))

    def where(self) -> str:
        tail = " | ".join(self._tail) or "(no output)"
        return f"log {self.log}; last lines: {tail[-1500:]}"

    @classmethod
    def kill_all(cls) -> None:
        for child in list(cls.live):
            child.kill()


# -- test data -----------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    relative: str  # path under input.dir, "/"-separated
    size: int
    sha256: str


def write_random(path: Path, size: int, rng: random.Random) -> SourceFile:
    """``size`` incompressible bytes, written and hashed piece by piece."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as fp:
        remaining = size
        while remaining:
            piece = rng.randbytes(min(remaining, PIECE))
            digest.update(piece)
            fp.write(piece)
            remaining -= len(piece)
    return SourceFile(path.name, size, digest.hexdigest())


WORDS = [
    *("order", "invoice", "customer", "payment", "shipment", "warehouse", "refund", "stock"),
    *("price", "quantity", "discount", "address", "status", "pending", "shipped", "session"),
    *("login", "checkout", "product", "review", "search", "request", "response", "retry"),
]
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
TEXT_BLOCK = 16 * MiB  # repeats beyond any codec's window at the levels used here


def _text_piece(rng: random.Random, size: int) -> bytes:
    lines: list[str] = []
    length = 0
    while length < size:
        line = (
            f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}."
            f"{rng.randint(0, 999):03d}Z {rng.choice(LEVELS)} svc={rng.choice(WORDS)} "
            f"user={rng.randint(1, 99999)} latency_ms={rng.randint(1, 2000)} "
            f'msg="{" ".join(rng.choices(WORDS, k=rng.randint(3, 12)))}"\n'
        )
        lines.append(line)
        length += len(line)
    return "".join(lines).encode()[:size]


def write_text(path: Path, size: int, rng: random.Random, cache: Path) -> SourceFile:
    """``size`` bytes of log-like text (compresses about 3-6x): a 16 MiB block of
    generated lines (kept in ``cache``), repeated."""
    if not cache.exists() or cache.stat().st_size != TEXT_BLOCK:
        tmp = cache.with_suffix(".tmp")
        with tmp.open("wb") as fp:
            for _ in range(TEXT_BLOCK // (256 * KiB)):
                fp.write(_text_piece(rng, 256 * KiB))
        tmp.rename(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as out, cache.open("rb") as block:
        remaining = size
        while remaining:
            piece = block.read(min(remaining, PIECE))
            if not piece:
                block.seek(0)
                continue
            digest.update(piece)
            out.write(piece)
            remaining -= len(piece)
    return SourceFile(path.name, size, digest.hexdigest())


def nested_path(rng: random.Random, i: int) -> str:
    """2 or 3 directory levels, a few hundred directories in all."""
    parts = [f"d{rng.randrange(8)}", f"e{rng.randrange(8)}"]
    if rng.random() < 0.5:
        parts.append(f"f{rng.randrange(4)}")
    return "/".join([*parts, f"file-{i:06d}.bin"])


def write_small_files(
    root: Path,
    count: int,
    rng: random.Random,
    low: int = 1 * KiB,
    high: int = 16 * KiB,
    text: bool = False,
) -> list[SourceFile]:
    """``count`` files of random sizes in [low, high] in nested directories."""
    files = []
    for i in range(count):
        relative = nested_path(rng, i)
        size = rng.randint(low, high)
        data = _text_piece(rng, size) if text else rng.randbytes(size)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(SourceFile(relative, size, hashlib.sha256(data).hexdigest()))
    return files


def write_sized_files(root: Path, count: int, size: int, rng: random.Random) -> list[SourceFile]:
    files = []
    for i in range(count):
        relative = f"batch-{i % 10}/file-{i:05d}.bin"
        found = write_random(root / relative, size, rng)
        files.append(SourceFile(relative, size, found.sha256))
    return files


def settle() -> None:
    """Write back every dirty page (``sync``) before a measured step, so that no step pays
    for the previous one's writes (the test data, the topic, the delivered files)."""
    os.sync()


def sha256_of(path: Path) -> str:
    with path.open("rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()


# -- deliveries ------------------------------------------------------------------------


def wait_delivered(
    items: Sequence[Sequence[Path]],
    children: Sequence[Child],
    timeout: float,
    interval: float = 0.01,
) -> float:
    """Wait until every item exists at one of its paths; returns the monotonic time it
    was seen complete (at most ``interval`` plus one scan late).

    Items are checked in order and a present one is never checked again, so one poll
    costs one ``stat`` plus one per newly delivered file. A delivery is a rename, so a
    file that exists is complete. Fails when a child exits non-zero, when every child
    has exited with items missing, or on timeout."""
    done = 0
    deadline = time.monotonic() + timeout
    while True:
        while done < len(items) and any(os.path.lexists(p) for p in items[done]):
            done += 1
        now = time.monotonic()
        if done == len(items):
            return now
        exits = [(c, c.poll()) for c in children]
        for child, ended in exits:
            if ended is not None and ended.code != 0:
                raise BenchFailure(
                    f"{child.name} exited with {ended.code} with {len(items) - done} of "
                    f"{len(items)} file(s) not delivered (first missing: {items[done][0]}); "
                    f"{child.where()}"
                )
        if children and all(ended is not None for _, ended in exits):
            raise BenchFailure(
                f"every downloader exited with {len(items) - done} of {len(items)} file(s) "
                f"not delivered (first missing: {items[done][0]}); {children[0].where()}"
            )
        if now > deadline:
            raise BenchFailure(
                f"{len(items) - done} of {len(items)} file(s) not delivered after "
                f"{timeout:.0f} s (first missing: {items[done][0]})"
            )
        time.sleep(interval)


def verify(files: Sequence[SourceFile], roots: Sequence[Path]) -> dict[Path, int]:
    """Every file exists under exactly one of ``roots`` with the expected bytes (size and
    SHA-256 of what is on disk). Returns how many files each root holds."""
    held = dict.fromkeys(roots, 0)
    for f in files:
        where = [root for root in roots if (root / f.relative).exists()]
        if len(where) != 1:
            found = ", ".join(map(str, where)) or "nowhere"
            raise BenchFailure(f"{f.relative} was delivered to {len(where)} places ({found})")
        path = where[0] / f.relative
        size = path.stat().st_size
        if size != f.size or sha256_of(path) != f.sha256:
            raise BenchFailure(f"{path} differs from the file sent ({size} vs {f.size} bytes)")
        held[where[0]] += 1
    return held


# -- topics ----------------------------------------------------------------------------


@dataclass
class Kafka:
    """The broker under test, and the topics this run created (deleted at the end)."""

    bootstrap: str
    data_dirs: list[Path] = field(default_factory=list)  # local broker's log.dirs, if known
    topics: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap,
                # A producer-type client's metadata refresh would otherwise have the broker
                # create again (auto.create.topics.enable) every topic it has deleted.
                "allow.auto.create.topics": False,
                "log_level": 4,  # no notice for each topic deleted
            }
        )

    def track(self, *topics: str) -> None:
        # Never twice: confluent-kafka 2.16 segfaults on a duplicate name in delete_topics.
        self.topics.extend(t for t in topics if t not in self.topics)

    def create_topic(self, name: str, partitions: int) -> None:
        self.track(name)
        futures = self.admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=30)
        futures[name].result(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the metadata shows every partition
            meta = self.admin.list_topics(name, timeout=10).topics.get(name)
            if meta is not None and meta.error is None and len(meta.partitions) == partitions:
                return
            time.sleep(0.1)
        raise BenchFailure(f"topic {name} did not appear with {partitions} partition(s)")

    def partitions(self, name: str) -> int:
        meta = self.admin.list_topics(name, timeout=10).topics.get(name)
        if meta is None or meta.error is not None:
            raise BenchFailure(f"topic {name} does not exist")
        return len(meta.partitions)

    def records_per_partition(self, topic: str) -> list[int]:
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": unique("marks"), "log_level": 4}
        )
        try:
            counts = []
            for p in range(self.partitions(topic)):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                counts.append(high - low)
            return counts
        finally:
            consumer.close()

    def group_ready(self, group_id: str, members: int, partitions: int) -> bool:
        """The group is stable with ``members`` members that share ``partitions``, each
        holding at least one."""
        try:
            found = self.admin.describe_consumer_groups([group_id])[group_id].result(10)
        except KafkaException:
            return False
        held = [len(m.assignment.topic_partitions) for m in found.members]
        return (
            found.state == ConsumerGroupState.STABLE
            and len(held) == members
            and all(held)
            and sum(held) == partitions
        )

    def message_limit(self) -> int:
        """The broker's message.max.bytes."""
        from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

        broker = next(iter(self.admin.list_topics(timeout=10).brokers))
        res = ConfigResource(ConfigResource.Type.BROKER, str(broker))
        configs = self.admin.describe_configs([res])[res].result(30)
        return int(configs["message.max.bytes"].value)

    def log_bytes(self, topic: str) -> int | None:
        """Bytes of the topic's log segments on a local broker's disk (None elsewhere)."""
        if not self.data_dirs:
            return None
        pattern = re.compile(re.escape(topic) + r"-\d+")
        total = 0
        for data in self.data_dirs:
            for part in data.iterdir():
                if pattern.fullmatch(part.name):
                    total += sum(seg.stat().st_size for seg in part.glob("*.log"))
        return total

    def delete_all(self) -> None:
        if not self.topics:
            return
        try:
            futures = self.admin.delete_topics(self.topics, operation_timeout=30)
            for future in futures.values():
                # A topic may never have been created (its section failed before).
                with contextlib.suppress(KafkaException):
                    future.result(60)
        finally:
            self.topics.clear()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
