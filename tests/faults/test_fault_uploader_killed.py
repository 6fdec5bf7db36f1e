"""Fault 3: the uploader is SIGKILLed in the middle of a large file. After a restart the
file arrives intact, and the downloader drops the abandoned attempt after
partial.file.expiry.ms, so staging space does not leak."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest

from harness import Pipeline, create_topic, wait_for, wait_for_tree, write_random

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def staged_bytes(staging: Path) -> int:
    total = 0
    for part in staging.glob("*.part") if staging.exists() else ():
        with contextlib.suppress(FileNotFoundError):  # delivered or discarded meanwhile
            total += part.stat().st_size
    return total


def test_uploader_killed_mid_file_then_restarted(pipeline: Pipeline, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    write_random(source / "big.bin", 150 * 2**20, seed=3)
    up_props = {"input.dir": str(source), "uploader.name": "truck",
                "file.minimum.age.ms": "0", "binary.chunk.size.bytes": "65536"}  # fmt: skip
    # The downloader must be consuming before the upload starts, or the whole file could
    # be acknowledged before it sees a byte and the kill would come too late.
    create_topic(pipeline.bootstrap, pipeline.topic)
    down = pipeline.start(
        "download",
        {"output.dir": str(out), "partial.file.expiry.ms": "4000", "commit.interval.ms": "500"},
    )
    wait_for(lambda: "assigned" in down.output(), 60, "the downloader to join")
    staging = out / ".streamsend" / "staging"
    first = pipeline.start("upload", up_props)
    try:
        # Kill once the downloader holds part of the file in staging.
        wait_for(lambda: staged_bytes(staging) > 0, 120, "part of the file to reach staging")
        first.proc.send_signal(signal.SIGKILL)
        first.wait(30)
        assert not (out / "truck" / "big.bin").exists()

        second = pipeline.start("upload", up_props)
        try:
            problems = wait_for_tree(source, out / "truck", timeout=180)
            assert problems == [], problems
            # The first, abandoned attempt is expired and its staging data removed.
            # (The log line follows the removal, so wait for the line, then look.)
            wait_for(lambda: "nothing received for" in down.output(), 60, "the expiry")
            assert not list(staging.glob("*.part"))
        finally:
            assert second.stop() == 0, second.output()[-3000:]
    finally:
        assert down.stop() == 0, down.output()[-3000:]
