"""The transport on confluent-kafka: producer and consumer adapters, and the factory the
services receive. Client configuration, connectivity and admin are in ``kafka.py``."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import confluent_kafka as ck

from streamsend.config.settings import CommonSettings
from streamsend.errors import ConfigError, KafkaFatal
from streamsend.transport.base import (
    AckCallback,
    CommitFailed,
    Headers,
    OutHeaders,
    PartitionsCallback,
    QueueFull,
    Received,
    TopicPartition,
)
from streamsend.transport.kafka import (
    Admin,
    ClientKind,
    ConnectionWatch,
    client_config,
    new_client,
)

log = logging.getLogger(__name__)


def _reader_config() -> dict[str, object]:
    """A reader of whole partitions: assigned, never subscribed, so its random group id
    (librdkafka requires one) never joins a group, and it commits nothing."""
    return {
        "group.id": f"streamsend-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }


# Reading a partition that yields nothing for this long while not at its end is an error.
STALL_SECONDS = 60.0


class KafkaProducer:
    def __init__(self, conf: dict[str, Any], watch: ConnectionWatch) -> None:
        self._producer = new_client(ck.Producer, conf)
        self._watch = watch

    def send(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        on_ack: AckCallback,
        partition: int | None = None,
    ) -> None:
        def delivered(err: ck.KafkaError | None, _msg: ck.Message) -> None:
            if err is None:
                self._watch.reached()
            on_ack(None if err is None else err.str())

        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        try:
            self._producer.produce(
                topic, value=value, key=key, headers=list(headers), on_delivery=delivered, **extra
            )
        except BufferError:
            raise QueueFull from None
        self._producer.poll(0)

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return int(self._producer.flush(timeout))

    def queued(self) -> int:
        return len(self._producer)


def _partitions(parts: list[ck.TopicPartition]) -> list[TopicPartition]:
    return [(p.topic, p.partition) for p in parts]


def _headers(msg: ck.Message) -> Headers:
    """Consumed headers as (name, bytes) pairs, whatever shape the client gives."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]


class KafkaConsumer:
    def __init__(self, conf: dict[str, Any], watch: ConnectionWatch) -> None:
        self._lag: dict[int, int] = {}
        if conf.get("statistics.interval.ms"):
            conf["stats_cb"] = self._on_stats
        self._consumer = new_client(ck.Consumer, conf)
        self._watch = watch

    def _on_stats(self, text: str) -> None:
        """librdkafka's statistics (served by poll): each partition's consumer_lag,
        -1 while unknown. Replaced whole, so a reader on another thread sees one report."""
        try:
            topics = json.loads(text).get("topics", {})
            self._lag = {
                int(p): int(info["consumer_lag"])
                for topic in topics.values()
                for p, info in topic.get("partitions", {}).items()
                if int(p) >= 0 and int(info.get("consumer_lag", -1)) >= 0
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            log.debug("unreadable librdkafka statistics", exc_info=True)

    def lag(self) -> dict[int, int]:
        return self._lag

    def subscribe(
        self, topic: str, on_assign: PartitionsCallback, on_revoke: PartitionsCallback
    ) -> None:
        def assigned(_c: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
            on_assign(_partitions(parts))

        def revoked(_c: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
            on_revoke(_partitions(parts))

        self._consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked)

    def poll(self, timeout: float) -> Received | None:
        msg = self._consumer.poll(timeout)
        self._watch.raise_if_fatal()
        if msg is None:
            return None
        err = msg.error()
        if err is not None:
            if err.code() != ck.KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err.str())
            return None
        self._watch.reached()
        return Received(
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            msg.key(),
            _headers(msg),
            msg.value(),
        )

    def commit(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        parts = [
            ck.TopicPartition(t, p, o, metadata=metadata.get((t, p), ""))
            for (t, p), o in offsets.items()
        ]
        try:
            self._consumer.commit(offsets=parts, asynchronous=False)
        except ck.KafkaException as exc:
            raise CommitFailed(str(exc)) from exc

    def committed_metadata(self, parts: list[TopicPartition]) -> dict[TopicPartition, str]:
        try:
            found = self._consumer.committed([ck.TopicPartition(t, p) for t, p in parts], 30)
        except ck.KafkaException as exc:
            # Only an optimisation (it spares duplicates after a rebalance): go on.
            log.warning("could not read the group's committed metadata: %s", exc)
            return {}
        return {(tp.topic, tp.partition): tp.metadata or "" for tp in found}

    def pause(self) -> None:
        self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(self._consumer.assignment())

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(ck.TopicPartition(partition[0], partition[1], offset))

    def close(self) -> None:
        self._consumer.close()


class KafkaTransport:
    """The :class:`~streamsend.transport.base.Transport` of a real cluster: every client
    gets the user's librdkafka properties for its kind, under the service's overrides."""

    def __init__(self, settings: CommonSettings, name: str) -> None:
        self._settings = settings
        self.watch = ConnectionWatch(name)

    def _config(self, kind: ClientKind, overrides: Mapping[str, object]) -> dict[str, Any]:
        return client_config(self._settings, kind, overrides, self.watch)

    def producer(self, overrides: Mapping[str, object]) -> KafkaProducer:
        return KafkaProducer(self._config("producer", overrides), self.watch)

    def consumer(self, overrides: Mapping[str, object]) -> KafkaConsumer:
        conf = self._config("consumer", overrides)
        # Whatever the user set: offsets are committed only for durable data.
        conf["enable.auto.commit"] = False
        return KafkaConsumer(conf, self.watch)

    def admin(self) -> Admin:
        return Admin(self._settings, self.watch)

    def read_partition(
        self, topic: str, partition: int
    ) -> Iterator[tuple[bytes | None, bytes | None]]:
        conf = self._config("consumer", _reader_config())
        return _read_to_end(new_client(ck.Consumer, conf), topic, partition, self.watch)

    def read_topic(
        self, topic: str, ends: dict[int, tuple[int, int]] | None = None
    ) -> Iterator[Received]:
        """Every record of every partition of ``topic``, from its beginning to the end it
        had when reading started, without joining a group or committing anything (the
        group id is random and never used for a commit). Waits for the cluster as the
        services do; an unknown topic is a ConfigError. ``ends``: as _read_partitions."""
        admin = self.admin()
        admin.wait_for_cluster()
        if not admin.topic_exists(topic):
            servers = self._settings.bootstrap_servers
            raise ConfigError(f"topic {topic!r} does not exist on {servers} (check topic)")
        partitions = list(range(admin.partition_count(topic)))
        # The user's properties apply, but not their group or auto-commit.
        conf = {**self._config("consumer", {}), **_reader_config()}
        return _read_partitions(new_client(ck.Consumer, conf), topic, partitions, self.watch, ends)

    def raise_if_fatal(self) -> None:
        self.watch.raise_if_fatal()

    def unreachable(self) -> bool:
        return self.watch.unreachable_since is not None


def _read_to_end(
    consumer: ck.Consumer, topic: str, partition: int, watch: ConnectionWatch
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Every record of one partition up to the end it had when reading started."""
    for rec in _read_partitions(consumer, topic, [partition], watch):
        yield rec.key, rec.value


def _read_partitions(
    consumer: ck.Consumer,
    topic: str,
    partitions: list[int],
    watch: ConnectionWatch,
    ends: dict[int, tuple[int, int]] | None = None,
) -> Iterator[Received]:
    """Every record of ``partitions`` up to the end each had when reading started, by
    assignment (never a group subscription, never a commit); closes ``consumer``.
    ``ends`` receives each partition's (low, high) watermarks. A stall counts only
    while the cluster is not known to be unreachable (an outage waits, as services do)."""
    try:
        high: dict[int, int] = {}
        for p in partitions:
            low, hi = consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=30)
            if ends is not None:
                ends[p] = (low, hi)
            if hi > low:
                high[p] = hi
        if not high:
            return
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in high])
        last_progress = time.monotonic()
        while high:
            watch.raise_if_fatal()
            if watch.unreachable_since is not None:
                last_progress = time.monotonic()
            if time.monotonic() - last_progress > STALL_SECONDS:
                raise KafkaFatal(f"reading {topic} stalled for {STALL_SECONDS:.0f} s")
            # Batches: a million small records one poll() at a time is slow.
            for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                last_progress = time.monotonic()
                watch.reached()
                p = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        high.pop(p, None)
                        continue
                    raise KafkaFatal(f"reading {topic}[{p}]: {err.str()}")
                offset = msg.offset() or 0
                if p not in high or offset >= high[p]:
                    continue  # written after reading started
                yield Received(topic, p, offset, msg.key(), _headers(msg), msg.value())
                if offset + 1 >= high[p]:
                    del high[p]
    finally:
        consumer.close()
