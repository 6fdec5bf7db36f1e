import json
import logging
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamsend.errors import ConfigError, KafkaFatal
from streamsend.transport.memory import MemoryBroker, MemoryTransport
from streamsend.upload import state
from streamsend.upload.state import (
    STATE_TOPIC_CONFIG,
    KafkaStateStore,
    MemoryStateStore,
    SentRecord,
    check_compacted,
    state_partition,
    version_of,
)
from streamsend.wire.sealed import UploaderSecret

SIZES = st.integers(0, 1 << 50)
MTIMES = st.integers(-(1 << 62), 1 << 62)


@given(SIZES, MTIMES, SIZES, MTIMES)
def test_version_is_equal_exactly_when_size_and_mtime_are(a: int, b: int, c: int, d: int) -> None:
    assert (version_of(a, b) == version_of(c, d)) == ((a, b) == (c, d))


def test_memory_store_loads_versions() -> None:
    store = MemoryStateStore()
    store.save("a/b.txt", SentRecord(10, -5, "ab" * 32, "cd" * 16))
    assert store.load() == {"a/b.txt": version_of(10, -5)}


# -- the Kafka store, on the in-memory transport ------------------------------------------


def kafka_store(broker: MemoryBroker, partition: int = 2) -> KafkaStateStore:
    broker.create("state", 4, STATE_TOPIC_CONFIG)
    transport = MemoryTransport(broker)
    return KafkaStateStore(transport, transport.producer({}), "state", "files", "up1", partition)


def test_kafka_store_writes_to_its_partition_and_reads_only_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker()
    store = kafka_store(broker)
    store.save("a/b.txt", SentRecord(10, -5, "ab" * 32, "cd" * 16))
    store.save("c.txt", SentRecord(1, 2, "ab" * 32, "cd" * 16))
    store.forget("c.txt")
    store._producer.flush(1)
    parts = broker.topics["state"].partitions
    assert [len(p) for p in parts] == [0, 0, 3, 0]
    assert [(r.key, r.value is None) for r in parts[2]] == [
        (b"files/up1/a/b.txt", False),
        (b"files/up1/c.txt", False),
        (b"files/up1/c.txt", True),
    ]
    assert json.loads(parts[2][0].value or b"") == {
        "size": 10,
        "mtime_ns": -5,
        "sha256": "ab" * 32,
        "transfer": "cd" * 16,
    }
    broker.append("state", b"files/up1/other.txt", [], b'{"size":1,"mtime_ns":1}', partition=1)
    broker.append("state", b"files/up2/x.txt", [], b'{"size":1,"mtime_ns":1}', partition=2)
    broker.append("state", b"other-topic/up1/x.txt", [], b'{"size":1,"mtime_ns":1}', partition=2)
    broker.append("state", b"files/up1/bad.txt", [], b"not json", partition=2)
    broker.append("state", None, [], b"{}", partition=2)
    caplog.set_level(logging.INFO)
    assert kafka_store(broker).load() == {"a/b.txt": version_of(10, -5)}
    assert (
        "state: 1 file(s) already sent by this uploader (read 7 record(s) of partition 2 of state)"
        in caplog.text
    )
    assert "ignoring unreadable state record for 'bad.txt'" in caplog.text


def test_the_partition_is_fixed_by_topic_and_uploader() -> None:
    assert state_partition("files", "up1", 16) == zlib.crc32(b"files/up1") % 16
    assert state_partition("files", "up1", 1) == 0
    spread = {state_partition("files", f"up{i}", 16) for i in range(100)}
    assert len(spread) > 8  # uploaders spread over the partitions


@pytest.mark.parametrize(
    ("policy", "ok"),
    [("compact", True), ("compact,delete", True), ("delete,compact", True), ("delete", False)],
)
def test_check_compacted(policy: str, ok: bool) -> None:
    broker = MemoryBroker()
    broker.create("state", 1, {"cleanup.policy": policy})
    admin = MemoryTransport(broker).admin()
    if ok:
        check_compacted(admin, "state")
    else:
        with pytest.raises(ConfigError, match=r"state topic 'state' has cleanup.policy='delete'"):
            check_compacted(admin, "state")


class FlakyTransport(MemoryTransport):
    """Fails to read a partition ``failures`` times (as a partition without a leader yet
    does, just after its topic was created), with ``error``."""

    def __init__(self, broker: MemoryBroker, failures: int, error: Exception) -> None:
        super().__init__(broker)
        self.failures, self.error, self.reads = failures, error, 0

    def read_partition(
        self, topic: str, partition: int
    ) -> Iterator[tuple[bytes | None, bytes | None]]:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().read_partition(topic, partition)


def flaky_store(transport: FlakyTransport) -> KafkaStateStore:
    return KafkaStateStore(transport, transport.producer({}), "state", "files", "up1", 0)


def test_a_failed_read_is_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(state.time, "sleep", lambda _s: None)
    broker = MemoryBroker()
    broker.append("state", b"files/up1/a", [], b'{"size":1,"mtime_ns":2}')
    transport = FlakyTransport(broker, 3, RuntimeError("Not leader for partition"))
    assert flaky_store(transport).load() == {"a": version_of(1, 2)}
    assert transport.reads == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Not leader for partition" in warnings[0].getMessage()


def test_a_read_that_keeps_failing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state.time, "sleep", lambda _s: None)
    monkeypatch.setattr(state, "READ_RETRY_SECONDS", 3.0)
    transport = FlakyTransport(MemoryBroker(), 10**6, RuntimeError("Not leader for partition"))
    with pytest.raises(RuntimeError, match="Not leader"):
        flaky_store(transport).load()


def test_a_fatal_error_is_not_retried() -> None:
    transport = FlakyTransport(MemoryBroker(), 1, KafkaFatal("authentication failed"))
    with pytest.raises(KafkaFatal):
        flaky_store(transport).load()
    assert transport.reads == 1


def test_a_topic_created_just_now_is_not_read() -> None:
    transport = FlakyTransport(MemoryBroker(), 1, RuntimeError("Not leader for partition"))
    assert flaky_store(transport).load(new_topic=True) == {}
    assert transport.reads == 0


# -- sealed state (end-to-end encryption on) -----------------------------------------------


def sealed_store(broker: MemoryBroker, secret: bytes) -> KafkaStateStore:
    transport = MemoryTransport(broker)
    if "state" not in broker.topics:
        broker.create("state", 4, STATE_TOPIC_CONFIG)
    return KafkaStateStore(
        transport, transport.producer({}), "state", "files", "up1", 2, UploaderSecret(secret)
    )


def test_sealed_store_shows_no_path_size_or_time_and_reads_back() -> None:
    broker, secret = MemoryBroker(), b"k" * 32
    store = sealed_store(broker, secret)
    store.save("payroll/alice.csv", SentRecord(123456, 1_700_000_000, "ab" * 32, "cd" * 16))
    store.save("gone.txt", SentRecord(1, 2, "ef" * 32, "01" * 16))
    store.forget("gone.txt")
    store._producer.flush(1)
    records = broker.topics["state"].partitions[2]
    clear = b"".join((r.key or b"") + (r.value or b"") for r in records)
    for secret_text in (b"payroll", b"alice", b"gone", b"123456", b"1700000000", b"ab" * 32):
        assert secret_text not in clear
    assert all(r.key.startswith(b"files/up1/") for r in records)
    assert sealed_store(broker, secret).load() == {
        "payroll/alice.csv": version_of(123456, 1_700_000_000)
    }


def test_sealed_store_replaces_records_it_cannot_open_with_tombstones() -> None:
    """Records written in the clear before encryption was on (or under another key) are
    not trusted, and get tombstones so compaction removes their clear paths."""
    broker = MemoryBroker()
    for old in (kafka_store(broker), sealed_store(broker, b"o" * 32)):
        old.save("clear/name.txt", SentRecord(1, 2, "ab" * 32, "cd" * 16))
        old._producer.flush(1)
    store = sealed_store(broker, b"k" * 32)
    assert store.load() == {}
    store._producer.flush(1)
    tail = broker.topics["state"].partitions[2][-2:]
    assert [r.value for r in tail] == [None, None]
    assert tail[0].key == b"files/up1/clear/name.txt"
