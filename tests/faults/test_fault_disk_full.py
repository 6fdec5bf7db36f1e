"""Fault 6: output.dir fills up. The downloader pauses, says how many bytes it needs and
for which file, and resumes by itself once there is room, losing and corrupting nothing."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Pipeline, age, explain, tmpfs, wait_for_tree, write_random

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB filesystem, to fill up."""
    with tmpfs(tmp_path / "small", "size=24m") as mount:
        yield mount


def test_full_disk_pauses_and_resumes(pipeline: Pipeline, small_fs: Path, tmp_path: Path) -> None:
    source = tmp_path / "in"
    for i in range(5):
        write_random(source / f"f{i}.bin", 8 * 2**20 + i, seed=i)
        age(source / f"f{i}.bin")
    up = pipeline.upload(source, binary_chunk_size_bytes="262144")
    assert up.returncode == 0, explain(up)

    out = small_fs / "out"
    # This test is about the full disk. The per-uploader staging cap (by default half the
    # filesystem: 12 MiB here) would otherwise refuse whichever of the five 8 MiB files
    # starts while the others hold 12 MiB, depending on how the 4 partitions interleave
    # (seen once in CI); a refused transfer is not retried (docs/reliability.md).
    down = pipeline.start(
        "download", {"output.dir": str(out), "staging.max.bytes.per.uploader": str(2**30)}
    )
    try:
        deadline = time.monotonic() + 120
        while "is full" not in down.output():
            assert time.monotonic() < deadline, down.output()[-3000:]
            assert down.proc.poll() is None, down.output()[-3000:]
            time.sleep(0.2)
        time.sleep(3)  # stays paused, alive, without spinning through records
        assert down.proc.poll() is None
        line = next(x for x in down.output().splitlines() if "is full" in x)
        assert "more bytes needed for 'up1/f" in line, line
        # Space returns: the filesystem is grown in place.
        subprocess.run(["mount", "-o", "remount,size=128m", str(small_fs)], check=True)
        problems = wait_for_tree(source, out / "up1", timeout=120)
        assert problems == [], problems
        assert "resumed" in down.output()
    finally:
        rc = down.stop()
    assert rc == 0, down.output()[-3000:]


def test_no_room_for_a_directory_at_delivery_is_disk_full_then_retried(tmp_path: Path) -> None:
    """Delivery creates the file's directories; out of inodes, that is DiskFull (the
    downloader pauses and retries), and the retry succeeds once room returns."""
    import hashlib

    from streamsend.download.reassembly import Transfer
    from streamsend.download.staging import DiskFull, StagingArea
    from streamsend.wire.protocol import End

    data = b"x" * 5000
    transfer = "ab" * 16
    with tmpfs(tmp_path / "inodes", "size=4m,nr_inodes=64") as mount:
        area = StagingArea(mount / "out")
        try:
            t = Transfer(transfer, "up", "a/b/f.bin", len(data))
            area.write(t, 0, data)
            t.record(0, data)
            fillers = []
            with pytest.raises(OSError):  # use up every inode
                for i in range(1000):
                    filler = mount / f"filler-{i}"
                    filler.write_bytes(b"")
                    fillers.append(filler)
            sha = hashlib.sha256(data).hexdigest()
            t.accept_end(
                End(transfer, "up", "a/b/f.bin", len(data), 1, sha, 1_700_000_000 * 10**9, 0o644)
            )
            area.verify(t)
            with pytest.raises(DiskFull):
                area.place(t, ("a", "b", "f.bin"))
            for filler in fillers[:10]:
                filler.unlink()
            path = area.place(t, ("a", "b", "f.bin"))
            area.sync_directories()
            assert path.read_bytes() == data
        finally:
            area.close()
