"""Chunk sizing at Kafka's stock 1 MiB message limit, where librdkafka's own default
(message.max.bytes=1,000,000) is smaller than what the broker accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import Pipeline, age, create_topic, explain, write_random
from streamsend import localkafka
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka

STOCK_LIMIT = 1_048_588  # Kafka's default message.max.bytes / max.message.bytes
LIBRDKAFKA_DEFAULT = 1_000_000


def chunk_size(log: str) -> int:
    match = re.search(r"Automatic configuration of a chunk size of (\d+) bytes", log)
    assert match, log
    return int(match.group(1))


def round_trip(pipeline: Pipeline, tmp_path: Path, size: int, **props: str) -> str:
    source, out = tmp_path / "in", tmp_path / "out"
    write_random(source / "big.bin", size, seed=5)
    age(source / "big.bin")
    up = pipeline.upload(source, **props)
    assert up.returncode == 0, explain(up)
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert compare_trees(source, out / "up1") == []
    return up.stderr


def test_chunks_fill_a_stock_limit_topic(pipeline: Pipeline, tmp_path: Path) -> None:
    # The dev broker allows 8 MiB; this topic allows Kafka's stock 1 MiB.
    create_topic(pipeline.bootstrap, pipeline.topic, config={"max.message.bytes": str(STOCK_LIMIT)})
    log = round_trip(pipeline, tmp_path, 5 * 2**20, upload_payload_percentage="99")
    chunk = chunk_size(log)
    # Above librdkafka's default limit: the client's message.max.bytes had to be raised.
    assert LIBRDKAFKA_DEFAULT < chunk < STOCK_LIMIT
    assert "topic max.message.bytes=1048588" in log


@pytest.mark.slow
def test_stock_limit_broker(unique_topic: str, tmp_path: Path) -> None:
    kafka_dir = tmp_path / "kafka"
    try:
        cluster = localkafka.up(dir=kafka_dir, port=0, message_max_bytes=STOCK_LIMIT, heap_mb=256)
        pipeline = Pipeline(cluster.bootstrap_servers, unique_topic, tmp_path / "work")
        create_topic(pipeline.bootstrap, pipeline.topic)  # inherits the broker's limit
        log = round_trip(pipeline, tmp_path, 3 * 2**20)
        assert f"broker message.max.bytes={STOCK_LIMIT}" in log
        assert chunk_size(log) < STOCK_LIMIT
    finally:
        localkafka.down(kafka_dir)
