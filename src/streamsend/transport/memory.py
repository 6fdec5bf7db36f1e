"""An in-memory Kafka for tests of the services: partitions, keys, consumer groups with
committed offsets, bounded producer queues, and fault points.

It keeps Kafka's contracts that the services depend on, and nothing more:

- a produced record is appended to its partition when the producer is polled, and its
  acknowledgement follows; a crash between the two leaves the record on the topic
  without the sender knowing (as a lost acknowledgement does);
- records of one key go to one partition, in order;
- a consumer of a group starts at the group's committed offset (or the beginning), and
  what it consumed but did not commit is read again by the next consumer of the group;
- ``faults(step)`` is called before each step a real broker makes durable ("ack",
  "commit"), so a test can stop the service exactly there.

One consumer per group at a time: group rebalancing is the real broker's business and is
tested on it.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from streamsend.transport.base import (
    AckCallback,
    OutHeaders,
    PartitionsCallback,
    QueueFull,
    Received,
    TopicPartition,
    TopicSpec,
)

Faults = Callable[[str], None]
STOCK_MESSAGE_LIMIT = 1_048_588


def _no_faults(_step: str) -> None:
    return None


@dataclass
class MemoryTopic:
    partitions: list[list[Received]]
    config: dict[str, str] = field(default_factory=dict)


class MemoryBroker:
    """The shared state: topics and committed offsets. Survives the services' "crashes"."""

    def __init__(self, faults: Faults = _no_faults, message_limit: int = 8 * 1024 * 1024) -> None:
        self.topics: dict[str, MemoryTopic] = {}
        self.committed: dict[tuple[str, str, int], int] = {}
        self.metadata: dict[tuple[str, str, int], str] = {}
        self.faults = faults
        self.message_limit = message_limit

    def create(
        self, topic: str, partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> bool:
        if topic in self.topics:
            return False
        self.topics[topic] = MemoryTopic([[] for _ in range(partitions)], dict(config or {}))
        return True

    def append(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        partition: int | None = None,
    ) -> Received:
        self.create(topic)  # auto.create.topics.enable, as a stock broker
        parts = self.topics[topic].partitions
        if partition is None:
            partition = zlib.crc32(key) % len(parts) if key is not None else 0
        log = parts[partition]
        encoded = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]
        record = Received(topic, partition, len(log), key, encoded, value)
        log.append(record)
        return record

    def records(self, topic: str) -> list[Received]:
        return [r for p in self.topics.get(topic, MemoryTopic([])).partitions for r in p]


@dataclass
class _Pending:
    topic: str
    key: bytes | None
    headers: OutHeaders
    value: bytes | None
    on_ack: AckCallback
    partition: int | None


class MemoryProducer:
    def __init__(self, broker: MemoryBroker, max_queued: int = 1000) -> None:
        self._broker = broker
        self._queue: list[_Pending] = []
        self._max_queued = max_queued

    def send(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        on_ack: AckCallback,
        partition: int | None = None,
    ) -> None:
        if len(self._queue) >= self._max_queued:
            raise QueueFull
        self._queue.append(_Pending(topic, key, headers, value, on_ack, partition))

    def poll(self, timeout: float) -> None:
        while self._queue:
            p = self._queue.pop(0)
            self._broker.append(p.topic, p.key, p.headers, p.value, p.partition)
            self._broker.faults("ack")
            p.on_ack(None)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def queued(self) -> int:
        return len(self._queue)


class MemoryConsumer:
    def __init__(
        self, broker: MemoryBroker, group: str, reset_latest: bool = False, prefetch: int = 0
    ) -> None:
        self._broker = broker
        # Like librdkafka, records already fetched into the client's queue may still come
        # out after pause(), whatever is sought meanwhile: up to ``prefetch`` of them.
        self._prefetch = prefetch
        self._fetched: list[Received] = []
        self._cold = False  # just resumed: the next poll finds nothing fetched yet
        self._group = group
        self._reset_latest = reset_latest
        self._topic: str | None = None
        self._on_assign: PartitionsCallback | None = None
        self._positions: dict[int, int] = {}
        self._next = 0
        self._paused = False

    def subscribe(
        self, topic: str, on_assign: PartitionsCallback, on_revoke: PartitionsCallback
    ) -> None:
        self._topic = topic
        self._on_assign = on_assign

    def _assign(self) -> bool:
        topic = self._topic
        if topic is None or topic not in self._broker.topics:
            return False
        count = len(self._broker.topics[topic].partitions)
        if len(self._positions) == count:
            return True
        for p in range(len(self._positions), count):
            committed = self._broker.committed.get((self._group, topic, p))
            if committed is None:
                committed = (
                    len(self._broker.topics[topic].partitions[p]) if self._reset_latest else 0
                )
            self._positions[p] = committed
        if self._on_assign is not None:
            self._on_assign([(topic, p) for p in range(count)])
        return True

    def poll(self, timeout: float) -> Received | None:
        if self._fetched:
            return self._fetched.pop(0)
        if self._cold:
            self._cold = False
        elif not self._paused and self._assign():
            assert self._topic is not None
            parts = self._broker.topics[self._topic].partitions
            for i in range(len(parts)):
                p = (self._next + i) % len(parts)
                position = self._positions[p]
                if position < len(parts[p]):
                    self._positions[p] = position + 1
                    self._next = p + 1
                    return parts[p][position]
        # Nothing to read: a short real wait keeps time-based loops (idle exit) from spinning.
        time.sleep(min(timeout, 0.005))
        return None

    def commit(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        self._broker.faults("commit")
        for (topic, partition), offset in offsets.items():
            self._broker.committed[(self._group, topic, partition)] = offset
            self._broker.metadata[(self._group, topic, partition)] = metadata.get(
                (topic, partition), ""
            )

    def committed_metadata(self, parts: list[TopicPartition]) -> dict[TopicPartition, str]:
        return {(t, p): self._broker.metadata.get((self._group, t, p), "") for t, p in parts}

    def pause(self) -> None:
        self._fetched = [r for r in (self.poll(0) for _ in range(self._prefetch)) if r]
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._cold = True

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._positions[partition[1]] = offset

    def lag(self) -> dict[int, int]:
        return {}

    def close(self) -> None:
        self._positions.clear()


class MemoryAdmin:
    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def wait_for_cluster(self, stopping: Callable[[], bool]) -> int:
        return 1

    def ensure_topic(self, topic: str, spec: TopicSpec) -> bool:
        return self._broker.create(topic, spec.partitions, spec.config)

    def partition_count(self, topic: str) -> int:
        return len(self._broker.topics[topic].partitions)

    def topic_config(self, topic: str, names: Sequence[str]) -> dict[str, str]:
        defaults = {"cleanup.policy": "delete", "max.message.bytes": str(STOCK_MESSAGE_LIMIT)}
        config = {**defaults, **self._broker.topics[topic].config}
        return {name: config[name] for name in names if name in config}

    def message_limits(self, topic: str) -> tuple[int, int]:
        limit = self._broker.message_limit
        return limit, limit


class MemoryTransport:
    """A :class:`~streamsend.transport.base.Transport` over one :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, max_queued: int = 1000, prefetch: int = 0) -> None:
        self.broker = broker
        self._max_queued = max_queued
        self._prefetch = prefetch

    def producer(self, overrides: Mapping[str, object]) -> MemoryProducer:
        return MemoryProducer(self.broker, self._max_queued)

    def consumer(self, overrides: Mapping[str, object]) -> MemoryConsumer:
        group = str(overrides.get("group.id", "default"))
        latest = overrides.get("auto.offset.reset") == "latest"
        return MemoryConsumer(self.broker, group, reset_latest=latest, prefetch=self._prefetch)

    def admin(self) -> MemoryAdmin:
        return MemoryAdmin(self.broker)

    def read_partition(
        self, topic: str, partition: int
    ) -> Iterator[tuple[bytes | None, bytes | None]]:
        if topic not in self.broker.topics:
            return iter(())
        log = list(self.broker.topics[topic].partitions[partition])
        return ((r.key, r.value) for r in log)

    def raise_if_fatal(self) -> None:
        return None

    def unreachable(self) -> bool:
        return False
