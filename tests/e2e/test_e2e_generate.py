"""generate.test.file.bytes: the uploader writes a test file into input.dir every 10 s,
as the original documents, and sends it like any other file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness import Pipeline, wait_for_tree

pytestmark = pytest.mark.kafka


def test_generated_test_files_are_sent(pipeline: Pipeline, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    uploader = pipeline.start(
        "upload",
        {"input.dir": str(source), "uploader.name": "gen", "file.minimum.age.ms": "0",
         "scan.interval.ms": "200", "generate.test.file.bytes": "123457"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "sent 'streamsend-test-" not in uploader.output():
        assert time.monotonic() < deadline, uploader.output()[-3000:]
        assert uploader.proc.poll() is None, uploader.output()[-3000:]
        time.sleep(0.2)
    assert uploader.stop() == 0, uploader.output()[-3000:]
    generated = sorted(source.glob("streamsend-test-*.bin"))
    assert generated and all(p.stat().st_size == 123457 for p in generated)
    assert not list(source.glob(".*.tmp")), "a half-written test file was left behind"
    down = pipeline.start("download", {"output.dir": str(out)})
    try:
        assert wait_for_tree(source, out / "gen", timeout=60) == []
    finally:
        assert down.stop() == 0
