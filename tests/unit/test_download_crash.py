"""Deterministic crash injection for the downloader.

The downloader is stopped exactly before each durable step it takes while receiving and
delivering files (each write, fsync, ledger write and fsync, rename, directory fsync,
unlink, and offset commit), then restarted on the same output.dir and the same in-memory
topic, where it re-reads what was not committed. A crash here is a process crash: what
the syscalls before it did stays on disk, nothing after it happens.

The scenario covers the awkward orders: an end record consumed (and committed) before
the file's last chunks, an empty file, an aborted transfer, and two phases with an idle
exit between them. After every run, crashed or not, any file at a final path holds
exactly its bytes; at the end every file is there, was delivered exactly once, nothing
was rejected, and staging is empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashplan import Crash, CrashPlan
from streamsend.config.loader import resolve
from streamsend.config.settings import DownloaderSettings
from streamsend.download import staging
from streamsend.download.service import Downloader
from streamsend.errors import TransferIncomplete
from streamsend.transport.memory import MemoryBroker, MemoryTransport
from streamsend.wire.protocol import Abort, Chunk, End, Message, encode

TOPIC = "files"
MTIME = 1_700_000_000_000_000_000


def transfer(tid: str, path: str, data: bytes, chunk: int = 1000) -> list[Message]:
    chunks: list[Message] = [
        Chunk(tid, "up", path, i, off, len(data), data[off : off + chunk])
        for i, off in enumerate(range(0, len(data), chunk))
    ]
    sha = hashlib.sha256(data).hexdigest()
    return [*chunks, End(tid, "up", path, len(data), len(chunks), sha, MTIME, 0o640)]


BIG = bytes(range(256)) * 12  # 3072 bytes: 4 chunks
SMALL = b"small file\n"
FILES = {"dir/big.bin": BIG, "small.txt": SMALL, "empty": b""}
T_BIG, T_SMALL, T_EMPTY, T_ABORT = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


def phases() -> list[list[Message]]:
    big = transfer(T_BIG, "dir/big.bin", BIG)  # chunks 0..3, end
    first = [
        big[0],
        big[4],  # the end record before the last chunks: it must survive a restart
        *transfer(T_SMALL, "small.txt", SMALL),
        *transfer(T_EMPTY, "empty", b""),
        Chunk(T_ABORT, "up", "gone.bin", 0, 0, 5000, b"x" * 1000),
        Abort(T_ABORT, "up", "gone.bin", "the file changed while it was being read"),
        big[1],
    ]
    second = [big[2], big[3]]
    return [first, second]


def produce(broker: MemoryBroker, messages: list[Message]) -> None:
    for message in messages:
        key, headers, value = encode(message)
        broker.append(TOPIC, key, headers, value)


def settings(out: Path) -> DownloaderSettings:
    flags = {
        "bootstrap.servers": "memory",
        "topic": TOPIC,
        "output.dir": str(out),
        "idle.exit.ms": "60",
        "commit.interval.ms": "100",
    }
    return resolve(DownloaderSettings, environ={}, flags=flags)


def check_final_paths(out: Path) -> None:
    """Nothing partial is ever visible: a file at a final path has exactly its bytes."""
    for relative, data in FILES.items():
        final = out / "up" / relative
        if final.exists():
            assert final.read_bytes() == data, f"{relative} is visible with the wrong bytes"
    assert not (out / "up" / "gone.bin").exists()


def run_scenario(out: Path, crash_at: int | None) -> tuple[CrashPlan, Counter[str]]:
    """Both phases; when the planned crash happens, the downloader is restarted (without
    faults) and the phase continues. Returns the plan and the deliveries per file."""
    broker = MemoryBroker()
    plan = CrashPlan(crash_at)
    broker.faults = plan
    delivered: Counter[str] = Counter()
    for messages in phases():
        produce(broker, messages)
        while True:
            downloader = Downloader(settings(out), MemoryTransport(broker), faults=plan)
            try:
                downloader.run()
            except TransferIncomplete:
                pass  # the first phase ends with big.bin incomplete, by design
            except Crash:
                delivered["files"] += downloader.stats.delivered
                check_final_paths(out)
                continue  # the process died: start it again
            delivered["files"] += downloader.stats.delivered
            check_final_paths(out)
            break
    return plan, delivered


def assert_clean_end(out: Path, delivered: Counter[str]) -> None:
    for relative, data in FILES.items():
        final = out / "up" / relative
        assert final.read_bytes() == data, relative
        assert final.stat().st_mtime_ns == MTIME
        assert final.stat().st_mode & 0o777 == 0o640
    assert delivered["files"] == len(FILES), f"delivered {delivered['files']} times"
    assert list((out / ".streamsend" / "rejected").iterdir()) == []
    assert list((out / ".streamsend" / "staging").iterdir()) == []


@contextlib.contextmanager
def sync_mode(mode: str) -> Iterator[None]:
    """ "fsync": an fsync per file and directory (small groups, the scenario's own);
    "syncfs": one syncfs for every group, as under load."""
    saved = staging.SYNCFS_FROM
    staging.SYNCFS_FROM = 1 if mode == "syncfs" else 10**9
    try:
        yield
    finally:
        staging.SYNCFS_FROM = saved


MODES = ["fsync", "syncfs"] if staging._libc_syncfs is not None else ["fsync"]


@pytest.mark.parametrize("mode", MODES)
def test_scenario_without_crash_and_its_durable_steps(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    with sync_mode(mode):
        plan, delivered = run_scenario(out, crash_at=None)
    assert_clean_end(out, delivered)
    kinds = set(plan.seen)
    # Every kind of durable step the harness claims to cover actually occurs.
    assert kinds >= {
        "write", "fsync", "ledger-write", "ledger-fsync", "rename", "fsync-dir", "unlink",
        "commit",
    }, kinds  # fmt: skip
    # Durable work is grouped: far fewer ledger fsyncs than records.
    assert plan.seen.count("ledger-fsync") < 12


def _step_count(mode: str) -> int:
    """How many durable steps the scenario takes, so every one of them gets a crash."""
    with tempfile.TemporaryDirectory() as tmp, sync_mode(mode):
        plan, _ = run_scenario(Path(tmp) / "out", crash_at=None)
    return len(plan.seen)


CASES = [(mode, n) for mode in MODES for n in range(1, _step_count(mode) + 1)]


@pytest.mark.parametrize(("mode", "crash_at"), CASES)
def test_crash_at_every_durable_step(tmp_path: Path, mode: str, crash_at: int) -> None:
    out = tmp_path / "out"
    with sync_mode(mode):
        plan, delivered = run_scenario(out, crash_at)
    assert len(plan.seen) >= crash_at, "the planned crash never happened"
    assert_clean_end(out, delivered)
