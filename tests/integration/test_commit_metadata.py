"""The group's committed metadata round-trips through the real broker: the downloader
relies on it to spare duplicates after a rebalance (download/service.py)."""

from __future__ import annotations

import pytest

from harness import create_topic
from streamsend.config.loader import resolve
from streamsend.config.settings import DownloaderSettings
from streamsend.download.offsets import DELIVERED_PREFIX, ID_CHARS, METADATA_LIMIT
from streamsend.transport.kafka_clients import KafkaTransport


@pytest.mark.kafka
def test_commit_metadata_round_trips(bootstrap_servers: str, unique_topic: str) -> None:
    create_topic(bootstrap_servers, unique_topic, partitions=2)
    settings = resolve(
        DownloaderSettings,
        environ={},
        flags={"bootstrap.servers": bootstrap_servers, "topic": unique_topic, "output.dir": "/x"},
    )
    group = {"group.id": f"{unique_topic}-group", "enable.auto.commit": False}
    # The longest metadata the downloader writes is accepted by a stock broker.
    ids = ["ab" * (ID_CHARS // 2)] * ((METADATA_LIMIT - len(DELIVERED_PREFIX)) // (ID_CHARS + 1))
    longest = DELIVERED_PREFIX + ",".join(ids)
    assert len(longest) <= METADATA_LIMIT
    consumer = KafkaTransport(settings, "test").consumer(group)
    try:
        consumer.commit({(unique_topic, 0): 0, (unique_topic, 1): 0}, {(unique_topic, 0): longest})
    finally:
        consumer.close()
    again = KafkaTransport(settings, "test").consumer(group)
    try:
        found = again.committed_metadata([(unique_topic, 0), (unique_topic, 1)])
    finally:
        again.close()
    assert found == {(unique_topic, 0): longest, (unique_topic, 1): ""}
