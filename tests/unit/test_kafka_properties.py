"""Tests for the table of librdkafka configuration property names."""

from __future__ import annotations

import confluent_kafka
import pytest

from streamsend.config.kafka_properties import (
    LIBRDKAFKA_PROPERTIES,
    applies_to,
    is_librdkafka_property,
)

UNKNOWN = "No such configuration property"


@pytest.mark.parametrize(
    ("name", "scope"),
    [
        ("bootstrap.servers", "*"),
        ("metadata.broker.list", "*"),
        ("security.protocol", "*"),
        ("sasl.mechanism", "*"),
        ("client.dns.lookup", "*"),
        ("enable.metrics.push", "*"),
        ("linger.ms", "P"),
        ("queue.buffering.max.ms", "P"),
        ("acks", "P"),
        ("request.required.acks", "P"),
        ("delivery.timeout.ms", "P"),
        ("compression.type", "P"),
        ("enable.idempotence", "P"),
        ("auto.offset.reset", "C"),
        ("group.id", "C"),
        ("group.protocol", "C"),
        ("group.remote.assignor", "C"),
        ("max.partition.fetch.bytes", "C"),
    ],
)
def test_known_names_have_expected_scope(name: str, scope: str) -> None:
    assert is_librdkafka_property(name)
    assert LIBRDKAFKA_PROPERTIES[name] == scope


@pytest.mark.parametrize(
    "name",
    ["opaque", "default_topic_conf", "dr_msg_cb", "error_cb", "interceptors", "ssl_key"],
)
def test_c_api_only_properties_are_excluded(name: str) -> None:
    assert not is_librdkafka_property(name)


@pytest.mark.parametrize("name", ["linger.msec", "Bootstrap.Servers", "", "streamsend.chunk.size"])
def test_unknown_names(name: str) -> None:
    assert not is_librdkafka_property(name)
    assert not applies_to(name, "producer")
    assert not applies_to(name, "consumer")


def test_applies_to() -> None:
    assert applies_to("bootstrap.servers", "producer")
    assert applies_to("bootstrap.servers", "consumer")
    assert applies_to("linger.ms", "producer")
    assert not applies_to("linger.ms", "consumer")
    assert applies_to("auto.offset.reset", "consumer")
    assert not applies_to("auto.offset.reset", "producer")


def test_table_is_sorted_and_scopes_valid() -> None:
    names = list(LIBRDKAFKA_PROPERTIES)
    assert names == sorted(names)
    assert set(LIBRDKAFKA_PROPERTIES.values()) <= {"*", "P", "C"}


def _rejected_as_unknown(name: str) -> bool:
    try:
        confluent_kafka.Producer({name: "1", "log_level": "0"})
    except (confluent_kafka.KafkaException, ValueError, TypeError) as exc:
        return UNKNOWN in str(exc)
    return False


_SAMPLE = sorted(LIBRDKAFKA_PROPERTIES)[:: max(1, len(LIBRDKAFKA_PROPERTIES) // 20)]


@pytest.mark.parametrize("name", _SAMPLE)
def test_librdkafka_accepts_sampled_names(name: str) -> None:
    assert not _rejected_as_unknown(name), name


def test_librdkafka_rejects_made_up_name() -> None:
    assert _rejected_as_unknown("streamsend.not.a.real.property")
