"""The downloader's staging area on a real filesystem (no Kafka)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsend.download.reassembly import TransferProgress
from streamsend.download.staging import StagedFile, StagingArea, VerificationFailed
from streamsend.wire.paths import UnsafePath, safe_relative_parts
from streamsend.wire.protocol import Chunk, End

T1 = "11111111111111111111111111111111"
T2 = "22222222222222222222222222222222"
MTIME = 1_600_000_000_123_456_789
DATA = random.Random(1).randbytes(10_000)


def chunks_of(
    data: bytes, size: int, transfer: str = T1, path: str = "dir/sub/file.bin"
) -> list[Chunk]:
    return [
        Chunk(transfer, "up", path, i, off, len(data), data[off : off + size])
        for i, off in enumerate(range(0, len(data), size))
    ]


def end_of(
    data: bytes,
    transfer: str = T1,
    path: str = "dir/sub/file.bin",
    sha: str | None = None,
    mode: int = 0o640,
) -> End:
    digest = sha if sha is not None else hashlib.sha256(data).hexdigest()
    return End(transfer, "up", path, len(data), -(-len(data) // 1000), digest, MTIME, mode)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def area(out: Path) -> Iterator[StagingArea]:
    a = StagingArea(out)
    yield a
    a.close()


def receive(
    area: StagingArea,
    chunks: list[Chunk],
    transfer: str = T1,
    size: int | None = None,
    path: str = "dir/sub/file.bin",
) -> StagedFile:
    first = chunks[0] if chunks else None
    progress = TransferProgress(
        transfer,
        "up",
        first.path if first else path,
        size if size is not None else (first.size if first else 0),
    )
    staged = area.open(progress)
    for chunk in chunks:
        if progress.accept_chunk(chunk):
            area.write(staged, chunk.offset, chunk.data)
    return staged


def deliver(area: StagingArea, staged: StagedFile, end: End) -> Path:
    staged.progress.accept_end(end)
    assert staged.progress.complete()
    return area.finalize(staged, end, safe_relative_parts(end.path))


def staging_names(area: StagingArea) -> set[str]:
    return {p.name for p in area.staging_dir.iterdir()}


def test_layout_is_created(out: Path, area: StagingArea) -> None:
    for name in ("staging", "done", "rejected"):
        assert (out / ".streamsend" / name).is_dir()
    assert area.done == set()


@pytest.mark.parametrize("order", ["in-order", "reverse", "shuffled", "with-duplicates"])
def test_finalize_rebuilds_the_file(out: Path, area: StagingArea, order: str) -> None:
    chunks = chunks_of(DATA, 1000)
    if order == "reverse":
        chunks.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(chunks)
    elif order == "with-duplicates":
        chunks = chunks[3:] + chunks + chunks[:5]
        random.Random(4).shuffle(chunks)
    staged = receive(area, chunks)
    path = deliver(area, staged, end_of(DATA))

    assert path == out / "up" / "dir" / "sub" / "file.bin"
    assert path.read_bytes() == DATA
    st = path.stat()
    assert st.st_mtime_ns == MTIME
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_ISREG(st.st_mode)
    assert T1 in area.done
    assert (out / ".streamsend" / "done" / T1).exists()
    assert T1 not in area.files
    assert staging_names(area) == set()


def test_uneven_chunks_and_last_short_chunk(area: StagingArea) -> None:
    data = DATA[:2500]
    chunks = [
        Chunk(T1, "up", "f", 0, 0, 2500, data[:700]),
        Chunk(T1, "up", "f", 2, 1500, 2500, data[1500:]),
        Chunk(T1, "up", "f", 1, 700, 2500, data[700:1500]),
    ]
    path = deliver(area, receive(area, chunks), end_of(data, path="f"))
    assert path.read_bytes() == data


def test_empty_file(out: Path, area: StagingArea) -> None:
    staged = receive(area, [], size=0, path="empty.txt")
    end = end_of(b"", path="empty.txt", mode=0o600)
    path = deliver(area, staged, end)
    assert path == out / "up" / "empty.txt"
    assert path.read_bytes() == b""
    assert path.stat().st_mtime_ns == MTIME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_setuid_bits_are_not_applied(area: StagingArea) -> None:
    path = deliver(
        area, receive(area, chunks_of(b"x", 10, path="f")), end_of(b"x", path="f", mode=0o4755)
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_delivery_replaces_an_older_version(out: Path, area: StagingArea) -> None:
    deliver(area, receive(area, chunks_of(b"old", 10, path="f")), end_of(b"old", path="f"))
    new = chunks_of(b"new version", 4, transfer=T2, path="f")
    path = deliver(area, receive(area, new, transfer=T2), end_of(b"new version", T2, "f"))
    assert path.read_bytes() == b"new version"
    assert area.done == {T1, T2}


def test_sha_mismatch_is_verification_failed(out: Path, area: StagingArea) -> None:
    staged = receive(area, chunks_of(DATA, 1000))
    with pytest.raises(VerificationFailed, match="SHA-256"):
        deliver(area, staged, end_of(DATA, sha="0" * 64))
    assert not (out / "up" / "dir" / "sub" / "file.bin").exists()
    assert T1 not in area.done


def test_corrupted_staged_byte_is_verification_failed(area: StagingArea) -> None:
    staged = receive(area, chunks_of(DATA, 1000))
    os.pwrite(staged.fd, b"\x00" if DATA[5000] else b"\x01", 5000)  # bit rot after receipt
    staged.hashed_upto = 0
    staged.hasher = hashlib.sha256()
    with pytest.raises(VerificationFailed):
        deliver(area, staged, end_of(DATA))


def test_more_bytes_staged_than_sent_is_verification_failed(area: StagingArea) -> None:
    staged = receive(area, chunks_of(DATA, 1000))
    os.pwrite(staged.fd, b"extra", len(DATA))
    with pytest.raises(VerificationFailed):
        deliver(area, staged, end_of(DATA))


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outside")


def assert_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.rglob("*")) == ["target"]
    assert (outside / "target").read_bytes() == b"precious"


@pytest.mark.parametrize(
    "plant",
    ["dir-symlink", "uploader-symlink", "nested-symlink", "file-in-the-way"],
)
def test_symlink_on_the_way_is_unsafe(
    out: Path, area: StagingArea, outside: Path, plant: str
) -> None:
    (outside / "target").write_bytes(b"precious")
    (out / "up").mkdir()
    if plant == "dir-symlink":
        (out / "up" / "dir").symlink_to(outside)
    elif plant == "uploader-symlink":
        (out / "up").rmdir()
        (out / "up").symlink_to(outside)
    elif plant == "nested-symlink":
        (out / "up" / "dir").mkdir()
        (out / "up" / "dir" / "sub").symlink_to(outside)
    else:
        (out / "up" / "dir").write_bytes(b"a file")
    staged = receive(area, chunks_of(DATA, 1000))
    with pytest.raises(UnsafePath):
        deliver(area, staged, end_of(DATA))
    assert_untouched(outside)
    assert T1 not in area.done
    # The caller then rejects the transfer; still nothing outside.
    rejected = area.reject(T1, "up", "dir/sub/file.bin", "unsafe path")
    assert rejected.read_bytes() == DATA
    assert_untouched(outside)


def test_symlink_at_final_name_is_replaced_not_followed(
    out: Path, area: StagingArea, outside: Path
) -> None:
    (outside / "target").write_bytes(b"precious")
    (out / "up").mkdir()
    (out / "up" / "f").symlink_to(outside / "target")
    path = deliver(area, receive(area, chunks_of(b"data", 10, path="f")), end_of(b"data", path="f"))
    assert not path.is_symlink()
    assert path.read_bytes() == b"data"
    assert_untouched(outside)


def test_directory_at_final_name_is_unsafe(out: Path, area: StagingArea) -> None:
    (out / "up" / "f").mkdir(parents=True)
    (out / "up" / "f" / "keep").write_bytes(b"k")
    with pytest.raises(UnsafePath):
        deliver(area, receive(area, chunks_of(b"data", 10, path="f")), end_of(b"data", path="f"))
    assert (out / "up" / "f" / "keep").read_bytes() == b"k"


def test_checkpoint_then_recover_restores_ranges(out: Path) -> None:
    chunks = chunks_of(DATA, 1000)
    first = StagingArea(out)
    staged = receive(first, [chunks[0], chunks[2], chunks[3], chunks[7]])
    first.checkpoint()
    assert {f"{T1}.part", f"{T1}.json"} <= staging_names(first)
    # Received after the last checkpoint: not durable, so not claimed after a restart.
    staged.progress.accept_chunk(chunks[9])
    first.write(staged, chunks[9].offset, chunks[9].data)
    first.close()

    second = StagingArea(out)
    try:
        recovered = list(second.recover())
        assert len(recovered) == 1
        progress = recovered[0].progress
        assert (progress.transfer, progress.uploader, progress.path) == (
            T1,
            "up",
            "dir/sub/file.bin",
        )
        assert progress.declared_size == len(DATA)
        assert progress.received.as_list() == [(0, 1000), (2000, 4000), (7000, 8000)]
        assert recovered[0].dirty is False
        assert second.files[T1] is recovered[0]
        # The rest arrives; the file is complete and verifies.
        for chunk in chunks:
            if progress.accept_chunk(chunk):
                second.write(recovered[0], chunk.offset, chunk.data)
        path = deliver(second, recovered[0], end_of(DATA))
        assert path.read_bytes() == DATA
    finally:
        second.close()


def test_checkpoint_skips_clean_files(area: StagingArea) -> None:
    staged = receive(area, chunks_of(DATA, 1000)[:2])
    area.checkpoint()
    assert staged.dirty is False
    sidecar = area.staging_dir / f"{T1}.json"
    sidecar.unlink()
    area.checkpoint()
    assert not sidecar.exists()


def test_recover_drops_part_without_sidecar_and_unreadable_sidecars(out: Path) -> None:
    first = StagingArea(out)
    receive(first, chunks_of(DATA, 1000)[:2])  # never checkpointed
    first.close()
    (out / ".streamsend" / "staging" / f"{T2}.json").write_text("{not json", encoding="utf-8")
    (out / ".streamsend" / "staging" / f"{T2}.part").write_bytes(b"junk")
    second = StagingArea(out)
    try:
        assert list(second.recover()) == []
        assert staging_names(second) == set()
        assert second.files == {}
    finally:
        second.close()


def test_reject_moves_data_aside_and_marks_done(out: Path, area: StagingArea) -> None:
    staged = receive(area, chunks_of(DATA, 1000))
    area.checkpoint()
    with pytest.raises(VerificationFailed):
        deliver(area, staged, end_of(DATA, sha="f" * 64))
    target = area.reject(T1, "up", "dir/sub/file.bin", "SHA-256 mismatch")
    assert target == out / ".streamsend" / "rejected" / f"{T1}.data"
    assert target.read_bytes() == DATA
    note = json.loads((out / ".streamsend" / "rejected" / f"{T1}.reason.json").read_text())
    assert note["uploader"] == "up"
    assert note["path"] == "dir/sub/file.bin"
    assert note["reason"] == "SHA-256 mismatch"
    assert T1 in area.done
    assert T1 not in area.files
    assert (out / ".streamsend" / "done" / T1).exists()
    assert staging_names(area) == set()
    assert not (out / "up").exists()


def test_done_transfers_survive_a_restart(out: Path) -> None:
    first = StagingArea(out)
    deliver(first, receive(first, chunks_of(b"abc", 2, path="f")), end_of(b"abc", path="f"))
    first.reject(T2, "up", "g", "gave up")  # nothing staged: only the marker and the note
    first.close()
    second = StagingArea(out)
    try:
        assert second.done == {T1, T2}
    finally:
        second.close()


def test_discard_removes_staging_data(area: StagingArea) -> None:
    receive(area, chunks_of(DATA, 1000)[:3])
    area.checkpoint()
    area.discard(T1)
    assert T1 not in area.files
    assert staging_names(area) == set()
    assert T1 not in area.done


def test_expire_drops_idle_transfers(out: Path, area: StagingArea) -> None:
    idle = receive(area, chunks_of(DATA, 1000)[:2])
    busy = receive(area, chunks_of(DATA, 1000, transfer=T2)[:2], transfer=T2)
    area.checkpoint()
    idle.last_activity = time.time() - 100
    expired = area.expire(10)
    assert [p.transfer for p in expired] == [T1]
    assert set(area.files) == {T2}
    assert staging_names(area) == {f"{T2}.part", f"{T2}.json"}
    assert busy.progress.received.total() == 2000


def test_expire_forgets_old_done_markers(out: Path, area: StagingArea) -> None:
    deliver(area, receive(area, chunks_of(b"abc", 2, path="f")), end_of(b"abc", path="f"))
    deliver(
        area,
        receive(area, chunks_of(b"xyz", 2, T2, "g"), transfer=T2),
        end_of(b"xyz", T2, "g"),
    )
    old = time.time() - 1000
    os.utime(out / ".streamsend" / "done" / T1, (old, old))
    assert area.expire(100) == []
    assert area.done == {T2}
    assert not (out / ".streamsend" / "done" / T1).exists()
    assert (out / ".streamsend" / "done" / T2).exists()


def test_recovered_transfer_is_not_expired_for_the_time_the_downloader_was_down(
    out: Path,
) -> None:
    first = StagingArea(out)
    staged = receive(first, chunks_of(DATA, 1000)[:2])
    staged.last_activity -= 10 * 86400  # last heard of ten days ago
    first.checkpoint()
    first.close()
    second = StagingArea(out)
    try:
        assert len(list(second.recover())) == 1
        # Its remaining chunks may be waiting on the topic: the clock restarts now.
        assert second.expire(max_idle_seconds=3600) == []
        assert T1 in second.files
    finally:
        second.close()


def test_discard_with_remember_ignores_the_transfer_from_then_on(
    out: Path, area: StagingArea
) -> None:
    receive(area, chunks_of(DATA, 1000)[:2])
    area.discard(T1, remember=True)
    assert T1 in area.done and T1 not in area.files
    assert staging_names(area) == set()
    assert (out / ".streamsend" / "done" / T1).exists()  # survives a restart
