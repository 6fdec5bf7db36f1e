"""Fixtures for fault-injection tests: clusters we may stop, kill and restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Pipeline
from streamsend import localkafka


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localkafka.Cluster]:
    """A single-node cluster of this module's own, so stopping it disturbs no other test."""
    directory = tmp_path_factory.mktemp("kafka-fault")
    cluster = localkafka.up(dir=directory, port=0, heap_mb=256)
    try:
        yield cluster
    finally:
        localkafka.down(directory)


@pytest.fixture
def own_pipeline(
    own_cluster: localkafka.Cluster, unique_topic: str, tmp_path: Path
) -> Iterator[Pipeline]:
    pipe = Pipeline(own_cluster.bootstrap_servers, unique_topic, tmp_path)
    yield pipe
    pipe.close()
