"""metrics.port through the real CLI and the real broker: after a transfer, both sides'
/metrics carry the documented series with the right values, and the probes answer."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import Pipeline, age, create_topic, wait_for, wait_for_tree, write_random

pytestmark = pytest.mark.kafka

FILES = {"a.bin": 2 * 2**20 + 5, "sub/b.txt": 3000, "c.txt": 10}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def series(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_and_probes_after_a_transfer(bootstrap_servers: str, tmp_path: Path) -> None:
    pipeline = Pipeline(bootstrap_servers, f"metrics-{uuid.uuid4().hex[:8]}", tmp_path)
    src, out = tmp_path / "in", tmp_path / "out"
    for name, size in FILES.items():
        write_random(src / name, size, seed=len(name))
        age(src / name)
    up_port, down_port = free_port(), free_port()
    try:
        down = pipeline.start("download", {"output.dir": str(out), "metrics.port": str(down_port)})
        # Alive but not ready: the topic does not exist yet, so no partition is assigned.
        wait_for(lambda: get(down_port, "/healthz")[0] == 200, 60, "the downloader's probe")
        assert get(down_port, "/readyz")[0] == 503
        assert down.stop() == 0
        create_topic(bootstrap_servers, pipeline.topic, partitions=2)
        down = pipeline.start(
            "download",
            {"output.dir": str(out), "metrics.port": str(down_port)},
            ["--statistics.interval.ms", "500"],
        )
        wait_for(lambda: get(down_port, "/readyz")[0] == 200, 60, "the downloader to be ready")
        assert get(down_port, "/healthz")[0] == 200
        up = pipeline.start(
            "upload",
            {
                "input.dir": str(src),
                "uploader.name": "edge1",
                "file.minimum.age.ms": "0",
                "metrics.port": str(up_port),
                "pack.file.max.bytes": "0",
            },
        )
        wait_for_tree(src, out / "edge1", timeout=120)
        total = sum(FILES.values())

        def uploader_done() -> bool:
            return (
                series(up_port).get(("streamsend_uploader_files_total", (("outcome", "sent"),)))
                == 3
            )

        wait_for(uploader_done, 30, "the uploader to count 3 files sent")
        found = series(up_port)
        assert found[("streamsend_uploader_bytes_total", ())] == total
        assert found[("streamsend_uploader_files_total", (("outcome", "failed"),))] == 0
        assert found[("streamsend_uploader_transfers_in_flight", ())] == 0
        assert found[("streamsend_uploader_kafka_connected", ())] == 1
        assert found[("streamsend_uploader_last_success_timestamp_seconds", ())] > 0
        assert get(up_port, "/healthz")[0] == 200
        assert get(up_port, "/readyz")[0] == 200

        found = series(down_port)
        assert found[("streamsend_downloader_files_total", (("outcome", "delivered"),))] == 3
        assert found[("streamsend_downloader_files_total", (("outcome", "rejected"),))] == 0
        assert found[("streamsend_downloader_bytes_total", ())] == total
        assert found[("streamsend_downloader_staging_transfers", ())] == 0
        assert found[("streamsend_downloader_paused_for_disk", ())] == 0
        assert found[("streamsend_downloader_kafka_connected", ())] == 1

        def lag_reported() -> bool:
            lags = {
                k: v for k, v in series(down_port).items()
                if k[0] == "streamsend_downloader_consumer_lag"
            }  # fmt: skip
            return bool(lags) and all(v == 0 for v in lags.values())

        wait_for(lag_reported, 30, "librdkafka to report a consumer lag of 0 per partition")
        assert up.stop() == 0 and down.stop() == 0
        assert get(down_port, "/healthz")[0] == 0  # the server went with the process
    finally:
        pipeline.close()
