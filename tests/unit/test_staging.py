"""The downloader's staging area on a real filesystem (no Kafka)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import resource
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamsend.download import ledger
from streamsend.download.reassembly import RangeSet, Transfer
from streamsend.download.staging import (
    DiskFull,
    StagingArea,
    Unstorable,
    VerificationFailed,
)
from streamsend.errors import EnvironmentProblem
from streamsend.wire.paths import UnsafePath, safe_relative_parts
from streamsend.wire.protocol import Chunk, End

T1 = "11111111111111111111111111111111"
T2 = "22222222222222222222222222222222"
T3 = "33333333333333333333333333333333"
T4 = "44444444444444444444444444444444"
UP = "up"
PATH = "dir/sub/file.bin"
MTIME = 1_600_000_000_123_456_789
DATA = random.Random(1).randbytes(10_000)
NOBODY = 65534


def tid(i: int) -> str:
    return f"{i:032x}"


def chunks_of(data: bytes, size: int, transfer: str = T1, path: str = PATH) -> list[Chunk]:
    return [
        Chunk(transfer, UP, path, i, off, len(data), data[off : off + size])
        for i, off in enumerate(range(0, len(data), size))
    ]


def end_of(
    data: bytes,
    transfer: str = T1,
    path: str = PATH,
    sha: str | None = None,
    mode: int = 0o640,
) -> End:
    digest = sha if sha is not None else hashlib.sha256(data).hexdigest()
    return End(transfer, UP, path, len(data), -(-len(data) // 1000), digest, MTIME, mode)


def store(area: StagingArea, t: Transfer, chunk: Chunk) -> None:
    """What the service does with a chunk: write only its new bytes, then record them."""
    view = memoryview(chunk.data)
    for start, stop in t.new_pieces(chunk):
        piece = view[start - chunk.offset : stop - chunk.offset]
        area.write(t, start, piece)
        t.record(start, piece)


def receive(
    area: StagingArea,
    chunks: list[Chunk],
    transfer: str = T1,
    size: int | None = None,
    path: str = PATH,
) -> Transfer:
    first = chunks[0] if chunks else None
    t = Transfer(
        first.transfer if first else transfer,
        UP,
        first.path if first else path,
        size if size is not None else (first.size if first else 0),
    )
    for chunk in chunks:
        store(area, t, chunk)
    return t


def deliver(area: StagingArea, t: Transfer, end: End) -> Path:
    """One delivery as the service does it: verify, fsync the bytes, record 'deliver' in
    the ledger, rename into place, fsync the directory."""
    t.accept_end(end)
    assert t.complete()
    area.verify(t)
    area.sync([t])
    area.append([ledger.deliver_entry(t, time.time())])
    area.sync_ledger()
    final = area.place(t, safe_relative_parts(t.path))
    area.sync_directories()
    return final


def part_of(out: Path, transfer: str = T1) -> Path:
    return out / ".streamsend" / "staging" / f"{transfer}.part"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fold_file(area: StagingArea) -> ledger.LedgerState:
    state, bad = ledger.fold(area.read_ledger())
    assert bad == 0
    return state


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def area(out: Path) -> Iterator[StagingArea]:
    a = StagingArea(out)
    yield a
    a.close()


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outside")


def assert_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.rglob("*")) == ["target"]
    assert (outside / "target").read_bytes() == b"precious"


class Recorder:
    """A ``faults`` callable: records every step, raises ``error`` at ``fail_at``."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.fail_at: str | None = None
        self.error: BaseException = OSError(errno.ENOSPC, "No space left on device")

    def __call__(self, step: str) -> None:
        self.steps.append(step)
        if step == self.fail_at:
            raise self.error


# -- layout and the bookkeeping directory ------------------------------------------------


def test_layout_is_created(out: Path, area: StagingArea) -> None:
    root = out / ".streamsend"
    for d in (root, root / "staging", root / "rejected"):
        st = d.lstat()
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o700, d
    ledger_st = (root / "ledger").lstat()
    assert stat.S_ISREG(ledger_st.st_mode)
    assert stat.S_IMODE(ledger_st.st_mode) == 0o600
    assert area.read_ledger() == []
    assert area.staged_names() == []
    assert sorted(p.name for p in root.iterdir()) == ["ledger", "rejected", "staging"]
    assert list((root / "staging").iterdir()) == []  # the write probe is gone


def test_existing_open_bookkeeping_dirs_are_tightened_to_0700(out: Path) -> None:
    (out / ".streamsend" / "staging").mkdir(parents=True)
    os.chmod(out / ".streamsend", 0o755)
    os.chmod(out / ".streamsend" / "staging", 0o777)
    StagingArea(out).close()
    assert stat.S_IMODE((out / ".streamsend").stat().st_mode) == 0o700
    assert stat.S_IMODE((out / ".streamsend" / "staging").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("link", "target_exists"),
    [
        (".streamsend", True),
        (".streamsend", False),
        (".streamsend/staging", True),
        (".streamsend/rejected", True),
    ],
)
def test_symlinked_bookkeeping_dir_is_refused(
    out: Path, outside: Path, link: str, target_exists: bool
) -> None:
    target = outside / "elsewhere"
    if target_exists:
        target.mkdir()
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(target)
    with pytest.raises(EnvironmentProblem, match="symlink"):
        StagingArea(out)
    assert (out / link).is_symlink()
    if target_exists:
        assert list(target.iterdir()) == []  # nothing created or written through the link
    else:
        assert not target.exists()


@pytest.mark.parametrize("owned", [".streamsend", ".streamsend/staging", ".streamsend/rejected"])
def test_bookkeeping_dir_of_another_user_is_refused(out: Path, owned: str) -> None:
    assert os.geteuid() == 0, "needs root to chown"
    (out / owned).mkdir(parents=True)
    os.chmod(out / owned, 0o777)
    os.chown(out / owned, NOBODY, NOBODY)
    with pytest.raises(EnvironmentProblem, match=f"uid {NOBODY}"):
        StagingArea(out)
    st = (out / owned).stat()
    assert st.st_uid == NOBODY
    assert stat.S_IMODE(st.st_mode) == 0o777  # not tightened: it is not ours
    assert list((out / owned).iterdir()) == []  # nothing written into it


@pytest.mark.parametrize("target_exists", [True, False])
def test_ledger_is_not_reached_through_a_symlink(
    out: Path, outside: Path, target_exists: bool
) -> None:
    target = outside / "target"
    if target_exists:
        target.write_bytes(b"precious")
    StagingArea(out).close()
    (out / ".streamsend" / "ledger").unlink()
    (out / ".streamsend" / "ledger").symlink_to(target)
    with pytest.raises(EnvironmentProblem):
        StagingArea(out)
    if target_exists:
        assert_untouched(outside)
    else:
        assert not target.exists()


def test_refused_bookkeeping_dir_leaks_no_descriptor(out: Path, outside: Path) -> None:
    (out / ".streamsend").mkdir(parents=True)
    (out / ".streamsend" / "rejected").symlink_to(outside)
    before = open_fds()
    with pytest.raises(EnvironmentProblem):
        StagingArea(out)
    assert open_fds() == before


# -- rebuilding and delivering -----------------------------------------------------------


@pytest.mark.parametrize("order", ["in-order", "reverse", "shuffled", "with-duplicates"])
def test_delivery_rebuilds_the_file(out: Path, area: StagingArea, order: str) -> None:
    chunks = chunks_of(DATA, 1000)
    if order == "reverse":
        chunks.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(chunks)
    elif order == "with-duplicates":
        chunks = chunks[3:] + chunks + chunks[:5]
        random.Random(4).shuffle(chunks)
    t = receive(area, chunks)
    assert t.received.as_list() == [(0, len(DATA))]
    path = deliver(area, t, end_of(DATA))

    assert path == out / UP / "dir" / "sub" / "file.bin"
    assert path.read_bytes() == DATA
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode)
    assert st.st_mtime_ns == MTIME
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert area.staged_names() == []
    assert area.open_files() == 0
    state = fold_file(area)
    assert T1 in state.done and T1 in state.delivering


def test_uneven_chunks_and_last_short_chunk(area: StagingArea) -> None:
    data = DATA[:2500]
    chunks = [
        Chunk(T1, UP, "f", 0, 0, 2500, data[:700]),
        Chunk(T1, UP, "f", 2, 1500, 2500, data[1500:]),
        Chunk(T1, UP, "f", 1, 700, 2500, data[700:1500]),
    ]
    path = deliver(area, receive(area, chunks), end_of(data, path="f"))
    assert path.read_bytes() == data


def test_empty_file_is_created_by_verify(out: Path, area: StagingArea) -> None:
    t = receive(area, [], size=0, path="empty.txt")
    t.accept_end(end_of(b"", path="empty.txt", mode=0o600))
    assert T1 not in area.staged_names()
    area.verify(t)
    assert T1 in area.staged_names()
    assert area.staged_size(T1) == 0
    path = area.place(t, ("empty.txt",))
    area.sync_directories()
    assert path == out / UP / "empty.txt"
    assert path.read_bytes() == b""
    assert path.stat().st_mtime_ns == MTIME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1755, 0o7755])
def test_setuid_setgid_sticky_bits_are_not_applied(area: StagingArea, mode: int) -> None:
    t = receive(area, chunks_of(b"x", 10, path="f"))
    path = deliver(area, t, end_of(b"x", path="f", mode=mode))
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_delivery_replaces_an_older_version(out: Path, area: StagingArea) -> None:
    deliver(area, receive(area, chunks_of(b"old", 10, path="f")), end_of(b"old", path="f"))
    new = chunks_of(b"new version", 4, transfer=T2, path="f")
    path = deliver(area, receive(area, new, transfer=T2), end_of(b"new version", T2, "f"))
    assert path.read_bytes() == b"new version"
    assert sorted(p.name for p in (out / UP).iterdir()) == ["f"]
    assert set(fold_file(area).done) == {T1, T2}


def test_a_round_fsyncs_each_directory_once(out: Path) -> None:
    faults = Recorder()
    area = StagingArea(out, faults)
    try:
        baseline = open_fds()
        batch = []
        for i, path in enumerate(["a/1", "a/2", "b/3"]):
            t = receive(area, chunks_of(b"data", 10, transfer=tid(i), path=path))
            t.accept_end(end_of(b"data", tid(i), path))
            area.verify(t)
            batch.append(t)
        faults.steps.clear()
        for t in batch:
            area.place(t, safe_relative_parts(t.path))
        area.sync_directories()
        # a/ and b/ receive files; output.dir and up/ received the new directories up/,
        # a/ and b/: four directories, each synced once.
        assert faults.steps == ["rename"] * 3 + ["fsync-dir"] * 4
        assert open_fds() == baseline  # staged files and directories all closed
        assert [(out / UP / p).read_bytes() for p in ("a/1", "a/2", "b/3")] == [b"data"] * 3
    finally:
        area.close()


# -- verification -------------------------------------------------------------------------


def test_sha_mismatch_is_verification_failed(out: Path, area: StagingArea) -> None:
    t = receive(area, chunks_of(DATA, 1000))
    with pytest.raises(VerificationFailed, match="SHA-256"):
        deliver(area, t, end_of(DATA, sha="0" * 64))
    assert not (out / UP).exists()
    assert area.staged_names() == [T1]  # kept for the caller to reject


@pytest.mark.parametrize("how", ["arrived-backwards", "hash-restarted"])
def test_corrupted_staged_byte_is_verification_failed(
    out: Path, area: StagingArea, how: str
) -> None:
    chunks = chunks_of(DATA, 1000)
    if how == "arrived-backwards":
        t = receive(area, chunks[::-1])  # only [0, 1000) hashed as it arrived
    else:
        t = receive(area, chunks)
        t.hasher, t.hashed_upto = hashlib.sha256(), 0  # as after a restart
    with part_of(out).open("r+b") as fp:  # bit rot after receipt
        fp.seek(5000)
        fp.write(bytes([DATA[5000] ^ 1]))
    with pytest.raises(VerificationFailed, match="SHA-256"):
        deliver(area, t, end_of(DATA))
    assert not (out / UP).exists()


def test_more_bytes_staged_than_sent_is_verification_failed(out: Path, area: StagingArea) -> None:
    t = receive(area, chunks_of(DATA, 1000))
    with part_of(out).open("ab") as fp:
        fp.write(b"extra")
    with pytest.raises(VerificationFailed, match="staged"):
        deliver(area, t, end_of(DATA))
    assert not (out / UP).exists()


def test_forged_overlapping_chunk_makes_the_file_unverifiable(out: Path, area: StagingArea) -> None:
    """Defect 1 on disk: genuine [0,10), forged [5,11), genuine [10,20), genuine end. Only
    the forged byte 10 is new when it arrives, so it is what is staged and hashed."""
    genuine = bytes(range(65, 85))
    g0, g1 = chunks_of(genuine, 10, path="f")
    forged = Chunk(T1, UP, "f", 1, 5, 20, b"XXXXXX")
    t = receive(area, [g0, forged, g1])
    assert part_of(out).read_bytes() == genuine[:10] + b"X" + genuine[11:]
    with pytest.raises(VerificationFailed, match="SHA-256"):
        deliver(area, t, end_of(genuine, path="f"))
    assert not (out / UP / "f").exists()


# -- unsafe final paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    "plant", ["dir-symlink", "uploader-symlink", "nested-symlink", "file-in-the-way"]
)
def test_symlink_on_the_way_is_unsafe(
    out: Path, area: StagingArea, outside: Path, plant: str
) -> None:
    (outside / "target").write_bytes(b"precious")
    (out / UP).mkdir()
    if plant == "dir-symlink":
        (out / UP / "dir").symlink_to(outside)
    elif plant == "uploader-symlink":
        (out / UP).rmdir()
        (out / UP).symlink_to(outside)
    elif plant == "nested-symlink":
        (out / UP / "dir").mkdir()
        (out / UP / "dir" / "sub").symlink_to(outside)
    else:
        (out / UP / "dir").write_bytes(b"a file")
    t = receive(area, chunks_of(DATA, 1000))
    with pytest.raises(UnsafePath):
        deliver(area, t, end_of(DATA))
    assert_untouched(outside)
    # The caller then rejects the transfer; still nothing outside.
    rejected = area.reject(t, "unsafe path")
    assert rejected.read_bytes() == DATA
    assert_untouched(outside)
    assert area.staged_names() == []


def test_symlink_at_final_name_is_replaced_not_followed(
    out: Path, area: StagingArea, outside: Path
) -> None:
    (outside / "target").write_bytes(b"precious")
    (out / UP).mkdir()
    (out / UP / "f").symlink_to(outside / "target")
    t = receive(area, chunks_of(b"data", 10, path="f"))
    path = deliver(area, t, end_of(b"data", path="f"))
    assert not path.is_symlink()
    assert path.read_bytes() == b"data"
    assert_untouched(outside)


def test_directory_at_final_name_is_unsafe(out: Path, area: StagingArea) -> None:
    (out / UP / "f").mkdir(parents=True)
    (out / UP / "f" / "keep").write_bytes(b"k")
    t = receive(area, chunks_of(b"data", 10, path="f"))
    with pytest.raises(UnsafePath):
        deliver(area, t, end_of(b"data", path="f"))
    assert (out / UP / "f" / "keep").read_bytes() == b"k"
    assert area.staged_names() == [T1]


# -- giving up ---------------------------------------------------------------------------


def test_reject_moves_data_aside_with_the_reason(out: Path, area: StagingArea) -> None:
    t = receive(area, chunks_of(DATA, 1000))
    with pytest.raises(VerificationFailed):
        deliver(area, t, end_of(DATA, sha="f" * 64))
    before = time.time()
    target = area.reject(t, "SHA-256 mismatch")
    assert target == out / ".streamsend" / "rejected" / f"{T1}.data"
    assert target.read_bytes() == DATA
    note = json.loads((out / ".streamsend" / "rejected" / f"{T1}.reason.json").read_text())
    assert note["uploader"] == UP
    assert note["path"] == PATH
    assert note["reason"] == "SHA-256 mismatch"
    assert before - 1 <= note["time"] <= time.time() + 1
    assert area.staged_names() == []
    assert area.open_files() == 0
    assert not (out / UP).exists()


def test_reject_without_staged_bytes_writes_only_the_reason(out: Path, area: StagingArea) -> None:
    t = Transfer(T1, UP, PATH, 10)
    area.reject(t, "gave up")
    rejected = out / ".streamsend" / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [f"{T1}.reason.json"]


def test_remove_deletes_staged_bytes(area: StagingArea) -> None:
    t = receive(area, chunks_of(DATA, 1000)[:3])
    receive(area, chunks_of(DATA, 1000, transfer=T2)[:1], transfer=T2)
    assert area.open_files() == 2
    area.remove(t.transfer)
    assert area.staged_names() == [T2]
    assert T1 not in area.staged_names()
    assert area.open_files() == 1
    area.remove(T3)  # nothing staged: no error


def test_clean_rejected_deletes_old_entries_only(out: Path, area: StagingArea) -> None:
    area.reject(receive(area, chunks_of(b"old", 10)), "old")
    area.reject(receive(area, chunks_of(b"new", 10, transfer=T2), transfer=T2), "new")
    rejected = out / ".streamsend" / "rejected"
    old = time.time() - 1000
    for name in (f"{T1}.data", f"{T1}.reason.json"):
        os.utime(rejected / name, (old, old))
    assert area.clean_rejected(100) == 1
    assert sorted(p.name for p in rejected.iterdir()) == [f"{T2}.data", f"{T2}.reason.json"]
    assert area.clean_rejected(100) == 0


# -- descriptors ---------------------------------------------------------------------------


def test_open_descriptors_are_bounded_by_max_open(out: Path) -> None:
    area = StagingArea(out, max_open=8)
    try:
        baseline = open_fds()
        files = {tid(i): random.Random(i).randbytes(300 + i) for i in range(50)}
        transfers = {
            t: Transfer(t, UP, f"d{i % 3}/f{i}", len(d)) for i, (t, d) in enumerate(files.items())
        }
        pieces = [
            (transfers[t], c)
            for t, d in files.items()
            for c in chunks_of(d, 100, t, transfers[t].path)
        ]
        random.Random(5).shuffle(pieces)  # interleaved: descriptors are evicted and reopened
        for t, chunk in pieces:
            store(area, t, chunk)
            assert area.open_files() <= 8
            assert open_fds() - baseline <= 8
        for t in transfers.values():
            end = End(
                t.transfer,
                UP,
                t.path,
                t.declared_size,
                4,
                hashlib.sha256(files[t.transfer]).hexdigest(),
                MTIME,
                0o644,
            )
            path = deliver(area, t, end)
            assert path.read_bytes() == files[t.transfer]
            assert area.open_files() <= 8
        assert area.staged_names() == []
    finally:
        area.close()


@pytest.fixture
def restored_rlimit() -> Iterator[None]:
    """The process's RLIMIT_NOFILE is put back as it was after the test."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


@pytest.fixture
def scarce_descriptors(restored_rlimit: None) -> Iterator[Callable[[int], None]]:
    """Lower the process's soft RLIMIT_NOFILE and fill it, leaving ``free`` descriptors."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fillers: list[int] = []

    def lower(free: int) -> None:
        highest = max(int(n) for n in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1 + free, hard))
        with contextlib.suppress(OSError):  # until EMFILE
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        for _ in range(free):
            os.close(fillers.pop())

    yield lower
    for fd in fillers:
        os.close(fd)


def test_lowered_rlimit_nofile_does_not_break_writing(
    out: Path, scarce_descriptors: Callable[[int], None]
) -> None:
    area = StagingArea(out)  # max_open 128: the process limit is reached first
    try:
        files = {tid(i): random.Random(i).randbytes(200) for i in range(40)}
        transfers = {t: Transfer(t, UP, f"f{i}", 200) for i, t in enumerate(files)}
        scarce_descriptors(12)
        for t, data in files.items():
            store(area, transfers[t], chunks_of(data, 100, t, transfers[t].path)[0])
        for t, data in files.items():
            store(area, transfers[t], chunks_of(data, 100, t, transfers[t].path)[1])
        assert area.open_files() < 40
        for t, data in files.items():
            assert part_of(out, t).read_bytes() == data
    finally:
        area.close()


def test_lowered_rlimit_nofile_does_not_break_delivery(
    out: Path, scarce_descriptors: Callable[[int], None]
) -> None:
    area = StagingArea(out)
    try:
        files = {tid(i): random.Random(i).randbytes(200) for i in range(40)}
        transfers = {t: Transfer(t, UP, f"d/f{i}", 200) for i, t in enumerate(files)}
        scarce_descriptors(12)
        for t, data in files.items():
            for chunk in chunks_of(data, 100, t, transfers[t].path):
                store(area, transfers[t], chunk)
        for t, data in files.items():
            path = deliver(area, transfers[t], end_of(data, t, transfers[t].path))
            assert path.read_bytes() == data
    finally:
        area.close()


def test_delivery_when_staged_files_hold_every_free_descriptor(
    out: Path, scarce_descriptors: Callable[[int], None]
) -> None:
    area = StagingArea(out)
    try:
        files = {tid(i): random.Random(i).randbytes(100) for i in range(6)}
        transfers = {t: Transfer(t, UP, f"d/f{i}", 100) for i, t in enumerate(files)}
        scarce_descriptors(len(files))
        for t, data in files.items():  # one descriptor each: all free ones are taken
            store(area, transfers[t], chunks_of(data, 100, t, transfers[t].path)[0])
        assert area.open_files() == len(files)
        for t, data in files.items():
            path = deliver(area, transfers[t], end_of(data, t, transfers[t].path))
            assert path.read_bytes() == data
    finally:
        area.close()


def test_max_open_is_at_most_a_quarter_of_the_descriptor_limit(
    out: Path, restored_rlimit: None
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))
    area = StagingArea(out, max_open=1000)
    try:
        assert area.max_open == 100
    finally:
        area.close()


def test_one_round_into_many_directories_with_few_descriptors(
    out: Path, scarce_descriptors: Callable[[int], None]
) -> None:
    area = StagingArea(out, max_open=4)
    try:
        files = {tid(i): random.Random(i).randbytes(100) for i in range(30)}
        transfers = {t: Transfer(t, UP, f"d{i}/f", 100) for i, t in enumerate(files)}
        scarce_descriptors(20)
        for t, data in files.items():
            store(area, transfers[t], chunks_of(data, 100, t, transfers[t].path)[0])
            transfers[t].accept_end(end_of(data, t, transfers[t].path))
            area.verify(transfers[t])
        # One delivery round as the service runs it: every rename, then the directories.
        area.sync(transfers.values())
        for t in transfers.values():
            area.place(t, safe_relative_parts(t.path))
        area.sync_directories()
        for t, data in files.items():
            assert (out / UP / transfers[t].path).read_bytes() == data
    finally:
        area.close()


# -- faults and errors -----------------------------------------------------------------


def test_fault_steps_of_one_delivery_in_order(out: Path) -> None:
    faults = Recorder()
    area = StagingArea(out, faults)
    try:
        assert faults.steps == []
        deliver(area, receive(area, chunks_of(b"abcdef", 3, path="f")), end_of(b"abcdef", path="f"))
        assert faults.steps == [
            "write",
            "write",
            "fsync",
            "ledger-write",
            "ledger-fsync",
            "rename",
            "fsync-dir",  # output.dir, which received the new directory up/
            "fsync-dir",  # up/, which received the file
        ]
    finally:
        area.close()


def test_each_fault_step_comes_just_before_its_syscall(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    area = StagingArea(out, lambda step: events.append(f"fault:{step}"))
    try:
        for name in ("pwrite", "fsync", "write", "rename", "unlink"):
            real = getattr(os, name)

            def spy(*args: object, _real: Callable[..., object] = real, _name: str = name,
                    **kwargs: object) -> object:  # fmt: skip
                events.append(_name)
                return _real(*args, **kwargs)

            monkeypatch.setattr(os, name, spy)
        deliver(area, receive(area, chunks_of(b"abc", 10, path="f")), end_of(b"abc", path="f"))
        area.remove(T1)  # nothing left to unlink: the fault comes first all the same
        monkeypatch.undo()
        assert events == [
            "fault:write",
            "pwrite",
            "fault:fsync",
            "fsync",
            "fault:ledger-write",
            "write",
            "fault:ledger-fsync",
            "fsync",
            "fault:rename",
            "rename",
            "fault:fsync-dir",
            "fsync",
            "fault:fsync-dir",
            "fsync",
            "fault:unlink",
            "unlink",
        ]
    finally:
        monkeypatch.undo()
        area.close()


def test_fault_steps_of_remove_reject_and_rewrite(out: Path) -> None:
    faults = Recorder()
    area = StagingArea(out, faults)
    try:
        receive(area, chunks_of(b"a", 10))
        t2 = receive(area, chunks_of(b"b", 10, transfer=T2), transfer=T2)
        faults.steps.clear()
        area.remove(T1)
        assert faults.steps == ["unlink"]
        faults.steps.clear()
        area.reject(t2, "why")
        assert faults.steps == ["rename"]
        faults.steps.clear()
        area.rewrite_ledger(["x"])
        assert faults.steps == ["ledger-write", "ledger-fsync", "rename", "fsync-dir"]
    finally:
        area.close()


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["write", "rename", "unlink"])
def test_a_fault_stops_before_the_syscall(out: Path, step: str) -> None:
    faults = Recorder()
    area = StagingArea(out, faults)
    try:
        t = receive(area, chunks_of(b"data", 10, path="f"))
        t.accept_end(end_of(b"data", path="f"))
        area.verify(t)
        faults.fail_at, faults.error = step, Crash()
        with pytest.raises(Crash):
            if step == "write":
                area.write(t, 4, b"more")
            elif step == "rename":
                area.place(t, ("f",))
            else:
                area.remove(T1)
        assert part_of(out).read_bytes() == b"data"
        assert not (out / UP / "f").exists()
    finally:
        area.close()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
def test_no_space_while_writing_is_disk_full(out: Path, err: int) -> None:
    faults = Recorder()
    faults.fail_at, faults.error = "write", OSError(err, os.strerror(err))
    area = StagingArea(out, faults)
    try:
        t = Transfer(T1, UP, PATH, len(DATA))
        with pytest.raises(DiskFull) as caught:
            area.write(t, 0, DATA[:1000])
        assert caught.value.needed == len(DATA)
    finally:
        area.close()


def test_no_space_while_syncing_is_disk_full(out: Path) -> None:
    faults = Recorder()
    area = StagingArea(out, faults)
    try:
        t = receive(area, chunks_of(DATA, 1000)[:1])
        faults.fail_at = "fsync"
        with pytest.raises(DiskFull):
            area.sync([t])
    finally:
        area.close()


def test_write_beyond_the_largest_file_is_unstorable(area: StagingArea) -> None:
    t = Transfer(T1, UP, PATH, 2**63 - 1)
    with pytest.raises(Unstorable):
        area.write(t, 2**63 - 1, b"x")


# -- the ledger file --------------------------------------------------------------------


def test_sync_ledger_appends_durably(out: Path, area: StagingArea) -> None:
    area.append([ledger.done_entry(T1, 1.0), ledger.forget_entry(T2)])
    assert area.read_ledger() == []  # queued, not written yet
    area.sync_ledger()
    first = [ledger.done_entry(T1, 1.0), ledger.forget_entry(T2)]
    assert area.read_ledger() == first
    area.append([ledger.done_entry(T3, 2.0)])
    area.sync_ledger()
    area.sync_ledger()  # nothing queued: nothing written
    assert area.read_ledger() == [*first, ledger.done_entry(T3, 2.0)]
    again = StagingArea(out)
    try:
        assert again.read_ledger() == [*first, ledger.done_entry(T3, 2.0)]
    finally:
        again.close()


def test_unsynced_ledger_entries_are_not_written(out: Path) -> None:
    first = StagingArea(out)
    first.append([ledger.done_entry(T1, 1.0)])
    first.close()
    second = StagingArea(out)
    try:
        assert second.read_ledger() == []
    finally:
        second.close()


@pytest.mark.parametrize("step", ["ledger-write", "ledger-fsync"])
def test_ledger_write_failure_is_disk_full_and_leaves_the_ledger_as_it_was(
    out: Path, step: str
) -> None:
    faults = Recorder()
    area = StagingArea(out, faults)
    try:
        area.append([ledger.done_entry(T1, 1.0)])
        area.sync_ledger()
        size, content = area.ledger_size(), (out / ".streamsend" / "ledger").read_bytes()
        faults.fail_at = step
        area.append([ledger.done_entry(T2, 2.0), ledger.forget_entry(T3)])
        with pytest.raises(DiskFull):
            area.sync_ledger()
        assert area.ledger_size() == size
        assert (out / ".streamsend" / "ledger").read_bytes() == content
        # Room again: the queued entries follow the last complete line, no half line.
        faults.fail_at = None
        area.sync_ledger()
        assert area.read_ledger() == [
            ledger.done_entry(T1, 1.0),
            ledger.done_entry(T2, 2.0),
            ledger.forget_entry(T3),
        ]
        assert ledger.fold(area.read_ledger())[1] == 0
    finally:
        area.close()


def test_rewrite_ledger_replaces_the_content(out: Path, area: StagingArea) -> None:
    area.append([ledger.done_entry(T1, 1.0), ledger.done_entry(T2, 2.0)])
    area.sync_ledger()
    area.rewrite_ledger([ledger.done_entry(T3, 3.0)])
    assert area.read_ledger() == [ledger.done_entry(T3, 3.0)]
    area.append([ledger.forget_entry(T3)])  # goes to the new file, not the replaced one
    area.sync_ledger()
    expected = [ledger.done_entry(T3, 3.0), ledger.forget_entry(T3)]
    assert area.read_ledger() == expected
    assert sorted(p.name for p in (out / ".streamsend").iterdir()) == [
        "ledger",
        "rejected",
        "staging",
    ]
    again = StagingArea(out)
    try:
        assert again.read_ledger() == expected
    finally:
        again.close()
    area.rewrite_ledger([])
    assert area.read_ledger() == []
    assert area.ledger_size() == 0


@pytest.mark.parametrize("step", ["ledger-write", "ledger-fsync", "rename"])
def test_failed_rewrite_keeps_the_old_ledger(out: Path, step: str) -> None:
    faults = Recorder()
    area = StagingArea(out, faults)
    try:
        old = [ledger.done_entry(T1, 1.0)]
        area.append(old)
        area.sync_ledger()
        faults.fail_at = step
        with pytest.raises((DiskFull, OSError)):
            area.rewrite_ledger([ledger.done_entry(T2, 2.0)])
        assert (out / ".streamsend" / "ledger").read_text().splitlines() == old
        faults.fail_at = None
        area.append([ledger.forget_entry(T1)])
        area.sync_ledger()
        assert area.read_ledger() == [*old, ledger.forget_entry(T1)]
    finally:
        area.close()


# -- recovery ---------------------------------------------------------------------------


def stage_entry(
    transfer: str, ranges: list[tuple[int, int]], size: int = len(DATA), path: str = PATH
) -> str:
    return ledger.stage_entry(Transfer(transfer, UP, path, size, RangeSet(ranges)))


def deliver_entry(transfer: str, data: bytes, at: float, path: str = PATH) -> str:
    t = Transfer(transfer, UP, path, len(data))
    t.end = end_of(data, transfer, path)
    return ledger.deliver_entry(t, at)


def prepare(out: Path, lines: list[str], parts: dict[str, bytes]) -> None:
    """A previous run's leftovers: these ledger lines and these .part files."""
    area = StagingArea(out)
    area.append(lines)
    area.sync_ledger()
    area.close()
    for transfer, data in parts.items():
        part_of(out, transfer).write_bytes(data)


def recover(out: Path) -> tuple[StagingArea, ledger.LedgerState]:
    area = StagingArea(out)
    return area, area.recover()


def snapshot(state: ledger.LedgerState) -> dict[str, object]:
    def one(t: Transfer) -> tuple[object, ...]:
        return (t.transfer, t.uploader, t.path, t.declared_size, t.received.as_list(), t.end)

    return {
        "staged": {k: one(t) for k, t in state.staged.items()},
        "delivering": {k: one(t) for k, t in state.delivering.items()},
        "done": dict(state.done),
    }


def test_recover_restores_a_staged_transfer_with_its_ranges(out: Path) -> None:
    ranges = [(0, 1000), (2000, 4000)]
    partial = bytearray(4000)
    for s, e in ranges:
        partial[s:e] = DATA[s:e]
    prepare(out, [stage_entry(T1, ranges)], {T1: bytes(partial)})
    area, state = recover(out)
    try:
        assert list(state.staged) == [T1]
        t = state.staged[T1]
        assert (t.transfer, t.uploader, t.path, t.declared_size) == (T1, UP, PATH, len(DATA))
        assert t.received.as_list() == ranges
        assert t.end is None
        assert t.dirty is False
        # The rest arrives; the file verifies from the staged bytes and is delivered.
        for chunk in chunks_of(DATA, 1000):
            store(area, t, chunk)
        assert deliver(area, t, end_of(DATA)).read_bytes() == DATA
    finally:
        area.close()


def test_recover_forgets_a_staged_transfer_whose_part_is_gone(out: Path) -> None:
    prepare(out, [stage_entry(T1, [(0, 1000)])], {})
    area, state = recover(out)
    try:
        assert state.staged == {} and state.done == {}
        assert area.read_ledger() == []
    finally:
        area.close()


def test_recover_cuts_ranges_beyond_the_part(out: Path) -> None:
    ranges = [(0, 1000), (2000, 9000), (9500, 10000)]
    prepare(out, [stage_entry(T1, ranges)], {T1: DATA[:5000]})
    area, state = recover(out)
    try:
        assert state.staged[T1].received.as_list() == [(0, 1000), (2000, 5000)]
    finally:
        area.close()


def test_recover_deletes_parts_and_leftovers_the_ledger_does_not_know(out: Path) -> None:
    prepare(out, [stage_entry(T1, [(0, 10)])], {T1: DATA[:10], T2: b"orphan"})
    (out / ".streamsend" / "staging" / ".probe-99999").write_bytes(b"")
    area, state = recover(out)
    try:
        assert list(state.staged) == [T1]
        assert sorted(p.name for p in (out / ".streamsend" / "staging").iterdir()) == [f"{T1}.part"]
    finally:
        area.close()


def test_recover_restages_a_delivery_whose_rename_did_not_happen(out: Path) -> None:
    prepare(out, [stage_entry(T1, [(0, 1000)]), deliver_entry(T1, DATA, 5.0)], {T1: DATA})
    area, state = recover(out)
    try:
        assert T1 not in state.done
        assert state.delivering == {}
        t = state.staged[T1]
        assert t.received.as_list() == [(0, len(DATA))]
        assert t.end == end_of(DATA)
        assert t.complete()
        # Delivered through the normal path, verified again from its bytes.
        area.verify(t)
        area.sync([t])
        path = area.place(t, safe_relative_parts(t.path))
        area.sync_directories()
        assert path.read_bytes() == DATA
    finally:
        area.close()


def test_recover_keeps_a_delivered_transfer_done(out: Path) -> None:
    prepare(out, [stage_entry(T1, [(0, 1000)]), deliver_entry(T1, DATA, 5.0)], {})
    area, state = recover(out)
    try:
        assert state.done == {T1: 5.0}
        assert state.staged == {} and state.delivering == {}
    finally:
        area.close()


def test_recover_rewrites_the_ledger_compactly(out: Path) -> None:
    lines = [
        ledger.done_entry(T4, 1.0),
        stage_entry(T1, [(0, 100)]),
        stage_entry(T1, [(0, 100), (200, 300)]),
        stage_entry(T2, [(0, 50)]),  # its .part is gone
        deliver_entry(T3, DATA, 7.0),  # not renamed yet
        '{"op":"stage","t":"torn',
    ]
    prepare(out, lines, {T1: DATA[:300], T3: DATA})
    area, state = recover(out)
    try:
        assert set(state.staged) == {T1, T3}
        assert state.done == {T4: 1.0}
        written = area.read_ledger()
        assert len(written) == 3
        assert snapshot(fold_file(area)) == snapshot(state)
    finally:
        area.close()
    # Recovering again finds the same state.
    again, state2 = recover(out)
    try:
        assert snapshot(state2) == snapshot(state)
        assert again.read_ledger() == written
    finally:
        again.close()
