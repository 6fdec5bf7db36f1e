"""Instant pick-up: a file that arrives in a new directory of a running uploader is
delivered in seconds, although no full scan is due for a minute."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from harness import Pipeline, create_topic, wait_for, write_random

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not Path("/proc/sys/fs/inotify").is_dir(), reason="needs inotify"),
]


def logged_at(output: str, message: str) -> float | None:
    """The time of the uploader's first log line containing ``message``."""
    for line in output.splitlines():
        if message in line:
            stamp = re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", line)
            if stamp:
                return datetime.strptime(stamp.group(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def test_a_file_in_a_new_directory_is_delivered_without_a_full_scan(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    down = pipeline.start("download", {"output.dir": str(out)})
    up = pipeline.start(
        "upload",
        {
            "input.dir": str(source),
            "uploader.name": "up1",
            "file.minimum.age.ms": "0",
            # Neither full scan comes round during the test: pick-up is the watcher's.
            "scan.interval.ms": "60000",
            "full.scan.interval.ms": "600000",
        },
    )
    try:
        wait_for(lambda: "watching input.dir" in up.output(), 60, "the uploader to watch")
        wait_for(lambda: "state: 0 file(s)" in up.output(), 60, "the first full scan")
        time.sleep(0.5)  # the first full scan is over: what follows is not its doing
        staged = write_random(tmp_path / "staged" / "f.bin", 10_000, seed=3)
        data = staged.read_bytes()
        (source / "new/deep").mkdir(parents=True)
        arrived = time.time()
        staged.rename(source / "new/deep/f.bin")  # atomic arrival
        delivered = out / "up1/new/deep/f.bin"
        deadline = time.monotonic() + 10
        while not delivered.exists():
            assert time.monotonic() < deadline, "not delivered within 10 s\n" + up.output()
            time.sleep(0.002)
        took = time.time() - arrived
    finally:
        up.stop()
        down.stop()
    assert delivered.read_bytes() == data
    acknowledged = logged_at(up.output(), "sent 'new/deep/f.bin'")
    assert acknowledged is not None, up.output()
    # Measured on a busy 2-core machine: tens of milliseconds. The bound is generous so
    # that a loaded CI machine does not fail it; a full scan would take a minute.
    assert acknowledged - arrived < 2, up.output()
    print(
        f"arrival to acknowledged by Kafka: {(acknowledged - arrived) * 1000:.0f} ms; "
        f"to delivered by the downloader: {took * 1000:.0f} ms"
    )
