"""A file rewritten in place while it is being sent is never delivered torn."""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from pathlib import Path

import pytest

from harness import Pipeline, Process, create_topic, wait_for

pytestmark = pytest.mark.kafka

SIZE = 16 * 2**20
REWRITE_SECONDS = 5.0


def version(k: int) -> bytes:
    return bytes([k]) * SIZE


def rewrite_in_place(path: Path, stop_after: float, versions: list[int]) -> None:
    """Version k is SIZE bytes of value k, written over the previous one (no truncation)."""
    rng = random.Random(7)
    deadline = time.monotonic() + stop_after
    k = versions[-1]
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.03, 0.08))
        k = k % 255 + 1
        with path.open("r+b") as fp:
            fp.write(version(k))
        versions.append(k)


def stop(proc: Process, name: str) -> str:
    """SIGTERM; the process must exit 0 within 60 s."""
    proc.proc.terminate()
    try:
        code = proc.wait(60)
    except Exception:
        proc.proc.kill()
        proc.wait(10)
        raise
    output = proc.output()
    assert code == 0, f"{name} exited {code}:\n{output[-6000:]}"
    return output


def test_file_rewritten_while_sent_is_never_delivered_torn(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    target = source / "busy.bin"
    target.write_bytes(version(1))
    delivered_path = out / "up1" / "busy.bin"

    downloader = pipeline.start("download", {"output.dir": str(out)})
    uploader = pipeline.start(
        "upload",
        {
            "input.dir": str(source),
            "uploader.name": "up1",
            "file.minimum.age.ms": "0",
            "scan.interval.ms": "200",
            "binary.chunk.size.bytes": "65536",
        },
    )
    versions = [1]
    writer = threading.Thread(target=rewrite_in_place, args=(target, REWRITE_SECONDS, versions))
    try:
        wait_for(lambda: "sending 'busy.bin'" in uploader.output(), 60, "the first send")
        writer.start()
        writer.join()
        final = version(versions[-1])
        wait_for(
            lambda: delivered_path.is_file() and delivered_path.read_bytes() == final,
            60,
            "the final version to be delivered",
        )
    finally:
        if writer.is_alive():
            writer.join()
        try:
            up_log = stop(uploader, "uploader")
        finally:
            down_log = stop(downloader, "downloader")

    assert delivered_path.read_bytes() == final
    uniform = {hashlib.sha256(version(k)).hexdigest()[:16] for k in set(versions)}
    delivered = re.findall(
        rf"delivered '{re.escape(str(delivered_path))}' \(\d+ bytes, sha256 ([0-9a-f]{{16}})\)",
        down_log,
    )
    assert delivered, down_log
    torn = [sha for sha in delivered if sha not in uniform]
    assert not torn, f"torn versions delivered: {torn}"
    # The torn path was exercised: the uploader caught a rewrite during a read.
    assert "abandoned 'busy.bin'" in up_log, up_log
