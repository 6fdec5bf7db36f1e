"""Fault 7: SIGTERM stops both sides cleanly within a bounded time, state and offsets
saved; restarted, they finish the job without sending or delivering anything twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from harness import Pipeline, age, count_records, explain, wait_for_tree, write_random
from streamsend.verify import compare_trees

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STOP_BOUND_SECONDS = 45


def stop_within(proc: object, bound: float) -> tuple[int, float]:
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    rc = proc.wait(bound)  # type: ignore[attr-defined]
    return rc, time.monotonic() - started


def test_sigterm_mid_transfer_then_resume(pipeline: Pipeline, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        write_random(source / f"small-{i}.bin", 100_000 + i, seed=i)
    write_random(source / "zz-large.bin", 300 * 2**20, seed=99)
    for p in source.iterdir():
        # Oldest first: the small files are sent before the large one.
        age(p, 3600 if p.name.startswith("zz") else 7200)
    props = {"input.dir": str(source), "uploader.name": "up1", "file.minimum.age.ms": "0",
             "binary.chunk.size.bytes": "65536"}  # fmt: skip
    uploader = pipeline.start("upload", props)
    deadline = time.monotonic() + 60
    while "sending 'zz-large.bin'" not in uploader.output():
        assert time.monotonic() < deadline, uploader.output()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)
    rc, took = stop_within(uploader, STOP_BOUND_SECONDS)
    assert rc == 0, uploader.output()[-3000:]
    assert took < STOP_BOUND_SECONDS
    log = uploader.output()
    assert "abandoned 'zz-large.bin'" in log or "sent 'zz-large.bin'" in log, log[-3000:]
    sent_first = log.count("sent '")

    # A downloader stopped the same way keeps what it has and commits it.
    downloader = pipeline.start("download", {"output.dir": str(out)})
    deadline = time.monotonic() + 60
    while not (out / "up1").exists() or len(list((out / "up1").iterdir())) < 6:
        assert time.monotonic() < deadline, downloader.output()[-3000:]
        time.sleep(0.2)
    rc, took = stop_within(downloader, STOP_BOUND_SECONDS)
    assert rc == 0 and took < 15, downloader.output()[-3000:]

    # Restarted: the uploader sends only what it had not finished.
    records_before = count_records(pipeline.bootstrap, pipeline.topic)
    again = pipeline.upload(source, binary_chunk_size_bytes="65536")
    assert again.returncode == 0, explain(again)
    if "sent 'zz-large.bin'" in log:
        assert "done: 0 file(s)" in again.stderr, again.stderr[-2000:]
    else:
        assert "done: 1 file(s)" in again.stderr, again.stderr[-2000:]
        assert count_records(pipeline.bootstrap, pipeline.topic) > records_before
    assert sent_first >= 6

    final = pipeline.download(out, idle_ms=5000)
    assert final.returncode == 0, explain(final)
    assert compare_trees(source, out / "up1") == []
    assert wait_for_tree(source, out / "up1", timeout=1) == []
    # The small files delivered before the stop are not delivered again.
    assert "small-" not in "".join(
        line for line in final.stderr.splitlines() if "delivered" in line
    ), final.stderr[-3000:]
