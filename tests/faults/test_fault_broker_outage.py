"""Fault 1: the broker stops mid-transfer and comes back 30 s later; nothing is lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness import Pipeline, wait_for_tree, write_random
from streamsend import localkafka

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_SECONDS = 30


def test_uploader_rides_out_a_broker_outage(
    own_cluster: localkafka.Cluster, own_pipeline: Pipeline, tmp_path: Path
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    props = {"file.minimum.age.ms": "0", "scan.interval.ms": "200",
             "binary.chunk.size.bytes": "131072", "uploader.name": "edge"}  # fmt: skip
    uploader = own_pipeline.start("upload", {"input.dir": str(source), **props})
    downloader = own_pipeline.start("download", {"output.dir": str(out)})

    # Files keep arriving before, during and after the outage.
    def feed() -> None:
        for i in range(24):
            write_random(source / "batch" / f"file-{i:02d}.bin", 3 * 2**20 + i, seed=i)
            time.sleep(1.5)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        time.sleep(5)
        localkafka.down(own_cluster.dir)
        time.sleep(OUTAGE_SECONDS)
        localkafka.up(own_cluster.dir)
        feeder.join()
        problems = wait_for_tree(source, out / "edge", timeout=180)
        assert problems == [], problems
    finally:
        feeder.join()
        up_rc, down_rc = uploader.stop(), downloader.stop()
    assert (up_rc, down_rc) == (0, 0), uploader.output()[-3000:] + downloader.output()[-3000:]

    up_log = uploader.output()
    assert up_log.count("Kafka is unreachable") == 1, up_log[-5000:]
    assert up_log.count("Kafka is reachable again") == 1, up_log[-5000:]
    # No flood: librdkafka's per-attempt connection errors are not repeated into our log.
    assert up_log.count("\n") < 400, f"{up_log.count(chr(10))} log lines"
    down_log = downloader.output()
    assert down_log.count("Kafka is unreachable") <= 1, down_log[-5000:]
