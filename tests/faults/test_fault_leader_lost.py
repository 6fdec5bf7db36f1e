"""Fault 4: on a 3-node cluster with a replication factor 3 topic, the partition leader
is killed during a transfer; the transfer completes intact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from harness import Pipeline, wait_for_tree, write_random
from streamsend import localkafka

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localkafka.Cluster]:
    directory = tmp_path_factory.mktemp("kafka-3")
    cluster = localkafka.up(dir=directory, brokers=3, port=0, heap_mb=256)
    try:
        yield cluster
    finally:
        localkafka.down(directory)


def leader_of(bootstrap: str, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=30)
    partition = md.topics[topic].partitions[0]
    assert len(partition.replicas) == 3, partition.replicas
    return int(partition.leader)


def test_transfer_survives_losing_the_partition_leader(
    three_nodes: localkafka.Cluster, unique_topic: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(three_nodes.bootstrap_servers, unique_topic, tmp_path)
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    uploader = pipeline.start(
        "upload",
        {"input.dir": str(source), "uploader.name": "rig", "file.minimum.age.ms": "0",
         "binary.chunk.size.bytes": "65536", "scan.interval.ms": "200"},
    )  # fmt: skip
    downloader = pipeline.start("download", {"output.dir": str(out)})
    try:
        for i in range(4):
            write_random(source / f"f{i}.bin", 30 * 2**20, seed=i)
        # Once the topic exists and data flows, kill its leader.
        deadline = time.monotonic() + 60
        while not (out / ".streamsend" / "staging").exists() or not any(
            (out / ".streamsend" / "staging").glob("*.part")
        ):
            assert time.monotonic() < deadline, uploader.output()[-3000:]
            time.sleep(0.1)
        leader = leader_of(three_nodes.bootstrap_servers, unique_topic)
        three_nodes.kill_node(leader)
        # More files after the loss: the transfer must go on with the new leader.
        for i in range(4, 6):
            write_random(source / f"f{i}.bin", 10 * 2**20, seed=i)
        problems = wait_for_tree(source, out / "rig", timeout=240)
        assert problems == [], problems
    finally:
        up_rc, down_rc = uploader.stop(), downloader.stop()
        pipeline.close()
        localkafka.up(three_nodes.dir)  # bring the killed node back for later tests
    assert (up_rc, down_rc) == (0, 0), uploader.output()[-3000:] + downloader.output()[-3000:]
