"""Admin.partition_count against brokers whose metadata converge (seen in CI on a
3-node cluster: the uploader created its topic, saw it in one broker's metadata, then
asked another broker that did not list it yet, and died with a KeyError).

The stub stands for confluent-kafka's AdminClient.list_topics answers only; the same
path runs against real brokers in tests/faults/test_fault_leader_lost.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from streamsend.errors import KafkaFatal
from streamsend.transport.kafka import Admin


class ConvergingMetadata:
    """The first ``lagging`` answers do not list topic "t"; later ones do (3 partitions)."""

    def __init__(self, lagging: int) -> None:
        self.lagging = lagging
        self.calls = 0

    def list_topics(self, timeout: float) -> Any:
        self.calls += 1
        topics = {}
        if self.calls > self.lagging:
            topics["t"] = SimpleNamespace(error=None, partitions=dict.fromkeys(range(3)))
        return SimpleNamespace(topics=topics, brokers={1: None, 2: None, 3: None})


def admin_over(client: ConvergingMetadata) -> Admin:
    admin = Admin.__new__(Admin)  # no connection: only list_topics is used
    admin._client = client
    return admin


def test_partition_count_waits_for_a_broker_whose_metadata_lags() -> None:
    client = ConvergingMetadata(lagging=2)
    assert admin_over(client).partition_count("t") == 3
    assert client.calls == 3


def test_a_topic_that_never_appears_is_one_error_after_the_wait() -> None:
    with pytest.raises(KafkaFatal, match="'t' is not in the cluster's metadata"):
        admin_over(ConvergingMetadata(lagging=10**9)).partition_count("t", wait=0.5)
