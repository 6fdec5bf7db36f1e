"""The staging area's fast write path: write-behind and drop-behind of large staged files,
and the running hash handed to the hash worker. Neither may weaken a guarantee: an error
the kernel reports while writing back fails the write like an error of pwrite, and the
delivered bytes are exactly the bytes received."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsend.download import staging
from streamsend.download.hashing import READ_BLOCK, LaggingHash
from streamsend.download.reassembly import Transfer
from streamsend.download.staging import DiskFull, StagingArea, VerificationFailed
from streamsend.wire.protocol import End

W = 64 * 1024
T1 = "1" * 32
T2 = "2" * 32
DATA = random.Random(3).randbytes(4 * W + W // 2)
needs_sync_file_range = pytest.mark.skipif(
    staging._libc_sync_file_range is None, reason="no sync_file_range(2) here"
)


@pytest.fixture
def area(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StagingArea]:
    monkeypatch.setattr(staging, "WRITE_BEHIND_WINDOW", W)
    a = StagingArea(tmp_path / "out")
    yield a
    a.close()


@pytest.fixture
def out_part(tmp_path: Path) -> Path:
    return tmp_path / "out" / ".streamsend" / "staging" / f"{T1}.part"


class Calls:
    """Spies on sync_file_range and fadvise; ``fail`` makes sync_file_range fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, int, int, int]] = []
        self.fail: int | None = None
        real_sfr = StagingArea._sync_file_range
        real_fadvise = os.posix_fadvise

        def sfr(fd: int, offset: int, length: int, flags: int) -> None:
            self.log.append(("sfr", offset, length, flags))
            if self.fail is not None:
                raise OSError(self.fail, os.strerror(self.fail))
            real_sfr(fd, offset, length, flags)

        def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
            self.log.append(("fadvise", offset, length, advice))
            real_fadvise(fd, offset, length, advice)

        monkeypatch.setattr(StagingArea, "_sync_file_range", staticmethod(sfr))
        monkeypatch.setattr(os, "posix_fadvise", fadvise)


def write_all(area: StagingArea, t: Transfer, data: bytes, piece: int = 10_000) -> None:
    view = memoryview(data)
    for start in range(0, len(data), piece):
        chunk = view[start : start + piece]
        area.write(t, start, chunk)
        t.record(start, chunk)


def end_of(t: Transfer, data: bytes) -> End:
    sha = hashlib.sha256(data).hexdigest()
    return End(t.transfer, t.uploader, t.path, len(data), 1, sha, 1_600_000_000 * 10**9, 0o644)


@needs_sync_file_range
def test_each_window_is_written_behind_and_the_one_before_dropped(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    t = Transfer(T1, "up", "big.bin", len(DATA))
    write_all(area, t, DATA)
    write, wait = 2, 1 | 2 | 4
    assert calls.log == [
        ("sfr", 0, W, write),
        ("sfr", W, W, write),
        ("sfr", 0, W, wait),
        ("fadvise", 0, W, os.POSIX_FADV_DONTNEED),
        ("sfr", 2 * W, W, write),
        ("sfr", W, W, wait),
        ("fadvise", W, W, os.POSIX_FADV_DONTNEED),
        ("sfr", 3 * W, W, write),
        ("sfr", 2 * W, W, wait),
        ("fadvise", 2 * W, W, os.POSIX_FADV_DONTNEED),
    ]
    t.accept_end(end_of(t, DATA))
    area.verify(t)
    area.sync([t])
    final = area.place(t, ("big.bin",))
    assert final.read_bytes() == DATA


@needs_sync_file_range
def test_a_file_smaller_than_a_window_is_left_to_the_fsync(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    write_all(area, Transfer(T1, "up", "small.bin", W - 1), DATA[: W - 1])
    assert calls.log == []


@needs_sync_file_range
def test_an_error_while_writing_back_fails_the_write(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync_file_range consumes the error it reports (a later fsync would not see it
    again): it must fail the write that saw it, not vanish."""
    calls = Calls(monkeypatch)
    t = Transfer(T1, "up", "big.bin", len(DATA))
    write_all(area, t, DATA[: W - 10_000])
    calls.fail = errno.EIO
    with pytest.raises(OSError) as caught:
        area.write(t, W - 10_000, DATA[W - 10_000 : W + 5000])
    assert caught.value.errno == errno.EIO
    assert not isinstance(caught.value, DiskFull)


@needs_sync_file_range
def test_no_space_while_writing_back_is_disk_full(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    t = Transfer(T1, "up", "big.bin", len(DATA))
    calls.fail = errno.ENOSPC
    with pytest.raises(DiskFull):
        area.write(t, 0, DATA[: W + 1])


@needs_sync_file_range
def test_a_filesystem_without_write_behind_gets_plain_writes(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    calls.fail = errno.EINVAL
    t = Transfer(T1, "up", "big.bin", len(DATA))
    write_all(area, t, DATA)
    assert [c[0] for c in calls.log] == ["sfr"]  # tried once, then switched off
    t.accept_end(end_of(t, DATA))
    area.verify(t)


def test_written_bytes_are_hashed_by_the_worker(area: StagingArea) -> None:
    t = Transfer(T1, "up", "f.bin", len(DATA))
    plain = Transfer(T2, "up", "g.bin", len(DATA))
    write_all(area, t, DATA)
    assert isinstance(t.hasher, LaggingHash)
    assert not isinstance(plain.hasher, LaggingHash)
    assert t.hashed_upto == len(DATA)
    assert t.hasher.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_a_failed_write_leaves_the_hash_alone(area: StagingArea) -> None:
    t = Transfer(T1, "up", "f.bin", 2**63 - 1)
    with pytest.raises(staging.Unstorable):
        area.write(t, 2**63 - 1, b"x")
    assert not isinstance(t.hasher, LaggingHash)
    assert t.hashed_upto == 0


def test_verify_hashes_what_the_worker_has_not_seen(area: StagingArea) -> None:
    """After a restart the running hash starts again: verification reads the staged
    bytes and hands them to the worker."""
    t = Transfer(T1, "up", "f.bin", len(DATA))
    write_all(area, t, DATA)
    t.hasher, t.hashed_upto = hashlib.sha256(), 0
    t.accept_end(end_of(t, DATA))
    area.verify(t)
    assert isinstance(t.hasher, LaggingHash)
    assert t.hashed_upto == len(DATA)


@needs_sync_file_range
def test_an_error_while_writing_back_fails_only_its_transfer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the service: like an I/O error of pwrite, the transfer is rejected and the
    downloader goes on with the others."""
    from streamsend.config.loader import resolve
    from streamsend.config.settings import DownloaderSettings
    from streamsend.download.service import Downloader
    from streamsend.transport.memory import MemoryBroker, MemoryTransport
    from streamsend.wire.protocol import Chunk, encode

    monkeypatch.setattr(staging, "WRITE_BEHIND_WINDOW", W)
    Calls(monkeypatch).fail = errno.EIO
    broker = MemoryBroker()
    small = b"small and fine"
    for t, path, data in ((T1, "big.bin", DATA), (T2, "small.txt", small)):
        sha = hashlib.sha256(data).hexdigest()
        records = [
            Chunk(t, "up", path, i, off, len(data), data[off : off + 20_000])
            for i, off in enumerate(range(0, len(data), 20_000))
        ]
        for message in [*records, End(t, "up", path, len(data), len(records), sha, 0, 0o644)]:
            broker.append("files", *encode(message))
    out = tmp_path / "out"
    flags = {"bootstrap.servers": "memory", "topic": "files", "output.dir": str(out),
             "idle.exit.ms": "100"}  # fmt: skip
    d = Downloader(resolve(DownloaderSettings, environ={}, flags=flags), MemoryTransport(broker))
    d.run()
    assert d.stats.rejected == 1
    assert (out / "up" / "small.txt").read_bytes() == small
    assert not (out / "up" / "big.bin").exists()
    assert (out / ".streamsend" / "rejected" / f"{T1}.data").exists()


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        seen.append((offset, n))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    return seen


def test_bytes_past_a_gap_are_hashed_once_it_closes(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks from several partitions arrive slightly out of order: the hash catches up
    from the staged file at the next write, so verification reads nothing back."""
    reads = _reads(monkeypatch)
    t = Transfer(T1, "up", "f.bin", len(DATA))
    pieces = [(s, DATA[s : s + 10_000]) for s in range(0, len(DATA), 10_000)]
    pieces[0], pieces[1] = pieces[1], pieces[0]
    pieces[5], pieces[7] = pieces[7], pieces[5]
    for start, piece in pieces:
        area.write(t, start, piece)
        t.record(start, piece)
    assert reads == [(10_000, 10_000), (60_000, 20_000)]  # only what arrived early
    assert t.hashed_upto == len(DATA)
    reads.clear()
    t.accept_end(end_of(t, DATA))
    area.verify(t)
    assert reads == []


def test_verify_hashes_what_is_still_behind_a_gap(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Transfer(T1, "up", "f.bin", len(DATA))
    pieces = [(s, DATA[s : s + 10_000]) for s in range(0, len(DATA), 10_000)]
    for start, piece in reversed(pieces):
        area.write(t, start, piece)
        t.record(start, piece)
    assert t.hashed_upto == 10_000  # the first piece came last: nothing to catch up yet
    t.accept_end(end_of(t, DATA))
    area.verify(t)
    assert t.hashed_upto == len(DATA)


@needs_sync_file_range
def test_windows_ahead_of_the_hash_stay_cached_until_it_passes_them(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition running ahead writes windows the hash cannot reach yet: they are not
    dropped (the hash reads them back from the cache once the gap closes)."""
    calls = Calls(monkeypatch)
    t = Transfer(T1, "up", "f.bin", len(DATA))
    ahead = [(s, DATA[s : min(s + 10_000, 3 * W)]) for s in range(W, 3 * W, 10_000)]
    first = [(s, DATA[s : min(s + 10_000, W)]) for s in range(0, W, 10_000)]
    for start, piece in ahead + first:
        area.write(t, start, piece)
        t.record(start, piece)
    assert [c for c in calls.log if c[0] == "fadvise"] == []
    assert t.hashed_upto == W  # the gap closed with the last write: caught up at the next
    area.write(t, 3 * W, DATA[3 * W : 3 * W + 10_000])
    assert t.hashed_upto == 3 * W
    dropped = [c[1] for c in calls.log if c[0] == "fadvise"]
    assert dropped == [0, W]


BIG = random.Random(4).randbytes(4 * READ_BLOCK + 100)


def test_large_read_backs_are_done_by_the_hash_worker(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _reads(monkeypatch)
    t = Transfer(T1, "up", "f.bin", len(BIG))
    order = [1, 2, 0, 3, 4]  # blocks 1 and 2 wait for block 0
    for i in order:
        piece = BIG[i * READ_BLOCK : (i + 1) * READ_BLOCK]
        area.write(t, i * READ_BLOCK, piece)
        t.record(i * READ_BLOCK, piece)
    assert t.hashed_upto == len(BIG)
    t.accept_end(end_of(t, BIG))
    area.verify(t)
    assert reads == []  # neither the catch-up nor verification read on this thread


def test_a_read_back_past_the_staged_file_fails_verification(
    area: StagingArea, out_part: Path
) -> None:
    """The worker found fewer staged bytes than recorded (the file was cut under us)."""
    t = Transfer(T1, "up", "f.bin", len(BIG))
    area.write(t, 0, BIG)
    t.record(0, BIG)
    assert isinstance(t.hasher, LaggingHash)
    fd = os.open(out_part, os.O_RDONLY)
    try:
        t.hasher.update_from(fd, len(BIG), 1)
    finally:
        os.close(fd)
    t.accept_end(end_of(t, BIG))
    with pytest.raises(VerificationFailed, match="shorter"):
        area.verify(t)
