"""Fault 2: the downloader is SIGKILLed again and again mid-transfer; in the end every
file is at its final path exactly once, intact, and nothing partial is visible."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from harness import Pipeline, age, explain, write_random
from streamsend.verify import compare_trees

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KILLS = 6


def visible_files(out: Path) -> set[str]:
    """Everything a user of output.dir sees: all files outside the .streamsend area."""
    return {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".streamsend" not in p.relative_to(out).parts
    }


def test_downloader_survives_repeated_sigkill(pipeline: Pipeline, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    rng = random.Random(4)
    for i in range(40):
        write_random(source / f"small/s{i:02d}.bin", rng.randint(0, 400_000), seed=i)
    for i in range(3):
        write_random(source / f"large/l{i}.bin", 120 * 2**20 + i, seed=100 + i)
    for p in source.rglob("*"):
        if p.is_file():
            age(p)
    up = pipeline.upload(source, binary_chunk_size_bytes="131072")
    assert up.returncode == 0, explain(up)
    expected = {
        f"up1/{p.relative_to(source).as_posix()}"
        for p in source.rglob("*")
        if p.is_file() and not p.name.startswith(".")  # the uploader's own lock file
    }

    props = {"output.dir": str(out), "commit.interval.ms": "300"}
    staging = out / ".streamsend" / "staging"
    kills_mid_transfer = 0
    for _ in range(KILLS):
        proc = pipeline.start("download", props)
        # Kill at a random moment once data flows (a fixed delay would race the speed of
        # the machine: this downloader moves hundreds of MB/s).
        deadline = time.monotonic() + 60
        while "delivered" not in proc.output() and not list(staging.glob("*.part")):
            assert time.monotonic() < deadline, proc.output()[-3000:]
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.8))
        if proc.proc.poll() is not None:
            pytest.fail(f"downloader exited by itself: {proc.output()[-3000:]}")
        proc.proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        seen = visible_files(out) if out.exists() else set()
        # Whatever is visible is complete and correct: never a partial file.
        assert seen <= expected, seen - expected
        for name in seen:
            rel = name.removeprefix("up1/")
            assert (out / name).read_bytes() == (source / rel).read_bytes(), name
        if seen != expected:
            kills_mid_transfer += 1
    assert kills_mid_transfer >= 3, "the kills should land while files are still arriving"

    final = pipeline.download(out, idle_ms=6000, commit_interval_ms="300")
    assert final.returncode == 0, explain(final)
    assert compare_trees(source, out / "up1") == []
    assert visible_files(out) == expected
    assert not list(staging.iterdir()), list(staging.iterdir())
