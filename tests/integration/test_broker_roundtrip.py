"""A chunk-sized message survives the broker byte for byte (the premise of Streamsend)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

MESSAGE_BYTES = 5 * 1024 * 1024
TOPIC_LIMIT = 8 * 1024 * 1024  # what `streamsend kafka up` gives its brokers by default
CLIENT_LIMIT = 16 * 1024 * 1024


@pytest.mark.kafka
def test_5_mib_message_round_trip(bootstrap_servers: str, unique_topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    # The topic carries its own limit so the test also holds on an external stock broker.
    topic = NewTopic(unique_topic, 1, -1, config={"max.message.bytes": str(TOPIC_LIMIT)})
    admin.create_topics([topic])[unique_topic].result(timeout=60)

    payload = os.urandom(MESSAGE_BYTES)
    delivered: list[KafkaError | None] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            # librdkafka's own limit (1,000,000) is below a 5 MiB message.
            "message.max.bytes": TOPIC_LIMIT,
            "compression.type": "none",  # random bytes: compression would only cost time
        }
    )
    producer.produce(
        unique_topic, value=payload, partition=0, on_delivery=lambda err, _m: delivered.append(err)
    )
    assert producer.flush(60) == 0, "the 5 MiB message was not delivered within 60 s"
    assert delivered == [None]

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_topic,
            "enable.auto.commit": False,
            "fetch.max.bytes": CLIENT_LIMIT,
            "max.partition.fetch.bytes": CLIENT_LIMIT,
            "receive.message.max.bytes": CLIENT_LIMIT + 512,  # must exceed fetch.max.bytes
        }
    )
    try:
        consumer.assign([TopicPartition(unique_topic, 0, 0)])
        deadline = time.monotonic() + 60
        received = None
        while received is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received = msg.value()
        assert received is not None, "no message consumed within 60 s"
    finally:
        consumer.close()

    assert len(received) == MESSAGE_BYTES
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert received == payload
