"""The small interfaces the services use to send and receive records.

The uploader and downloader never import ``confluent_kafka``: they talk to a
:class:`Transport`, which builds the three clients they need. ``kafka_*.py`` implement it
on confluent-kafka; ``memory.py`` implements it in memory, so commit ordering,
acknowledgements, backpressure and crash recovery are tested deterministically, without a
broker. (httpx's transports are the model: one small interface, a real and a mock
implementation.)

Types are plain Python values: a record is (key, headers, value) as bytes, a partition is
``(topic, partition)``, an acknowledgement is an error text or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

TopicPartition = tuple[str, int]
Headers = Sequence[tuple[str, bytes | None]]
OutHeaders = Sequence[tuple[str, str | bytes | None]]

# Called once per produced record: None when the record is acknowledged by the cluster,
# else the reason it never will be.
AckCallback = Callable[[str | None], None]
PartitionsCallback = Callable[[list[TopicPartition]], None]


class QueueFull(Exception):
    """The producer's bounded queue is full: serve acknowledgements, then try again."""


class CommitFailed(Exception):
    """Offsets were not committed; the records after the last commit will be replayed."""


@dataclass(frozen=True)
class Received:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Headers
    value: bytes | None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Producer(Protocol):
    def send(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        on_ack: AckCallback,
        partition: int | None = None,
    ) -> None:
        """Queue one record (``partition=None``: the client's partitioner picks by key).
        Raises :class:`QueueFull` when the bounded queue is full."""

    def poll(self, timeout: float) -> None:
        """Serve acknowledgements (``on_ack`` runs here), waiting up to ``timeout``."""

    def flush(self, timeout: float) -> int:
        """Wait until every queued record is acknowledged; returns how many remain."""

    def queued(self) -> int:
        """Records queued or in flight, not acknowledged yet."""


class Consumer(Protocol):
    def subscribe(
        self, topic: str, on_assign: PartitionsCallback, on_revoke: PartitionsCallback
    ) -> None: ...

    def poll(self, timeout: float) -> Received | None:
        """The next record, or None when none arrived within ``timeout``."""

    def commit(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Commit synchronously: ``offsets`` are the next offsets to read, each with the
        group's ``metadata`` string for it. Raises :class:`CommitFailed`."""

    def committed_metadata(self, parts: list[TopicPartition]) -> dict[TopicPartition, str]:
        """The metadata committed with the group's offsets of ``parts`` ("" when none)."""

    def pause(self) -> None:
        """Stop fetching from every assigned partition (the group session stays alive)."""

    def resume(self) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` again from ``offset``."""

    def close(self) -> None: ...

    def lag(self) -> dict[int, int]:
        """Records behind the end per assigned partition, as last reported (empty when
        the client reports none: librdkafka only with statistics.interval.ms set)."""
        ...


@dataclass(frozen=True)
class TopicSpec:
    partitions: int
    replication: int
    config: Mapping[str, str]


class Admin(Protocol):
    def wait_for_cluster(self, stopping: Callable[[], bool]) -> int:
        """Block until the cluster answers; returns its number of brokers."""

    def ensure_topic(self, topic: str, spec: TopicSpec) -> bool:
        """Create the topic when missing; True when this call created it."""

    def partition_count(self, topic: str) -> int: ...

    def topic_config(self, topic: str, names: Sequence[str]) -> dict[str, str]:
        """The topic's effective values of the configuration entries ``names``."""

    def message_limits(self, topic: str) -> tuple[int, int]:
        """(broker ``message.max.bytes``, topic ``max.message.bytes``)."""


class Transport(Protocol):
    """Builds the clients of one service. ``overrides`` are the service's own client
    settings (librdkafka names), applied over the user's."""

    def producer(self, overrides: Mapping[str, object]) -> Producer: ...

    def consumer(self, overrides: Mapping[str, object]) -> Consumer: ...

    def admin(self) -> Admin: ...

    def read_partition(
        self, topic: str, partition: int
    ) -> Iterator[tuple[bytes | None, bytes | None]]:
        """(key, value) of every record of one partition, from its beginning to the end
        it had when reading started. For the uploader's state."""

    def raise_if_fatal(self) -> None:
        """Raise KafkaFatal when the cluster refused us for good (authentication...)."""

    def unreachable(self) -> bool:
        """True while the cluster is known to be unreachable (for progress lines)."""
