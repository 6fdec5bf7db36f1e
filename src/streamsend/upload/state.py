"""What the uploader has sent, kept in a compacted Kafka topic.

One record per file, keyed ``{topic}/{uploader}/{path}`` (the chunk topic is part of the
key: the same directory sent to another topic is sent again), so the state grows by one small
record per tracked file and compaction keeps only the latest: a million files is a
million small records, never one document that outgrows the message size limit.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streamsend.errors import KafkaFatal

log = logging.getLogger(__name__)

STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


@dataclass(frozen=True)
class SentRecord:
    """What is written per file: enough to audit what was sent, and when it changed."""

    size: int
    mtime_ns: int
    sha256: str
    transfer: str


# What is kept in memory per file: only what decides whether it changed, packed into
# one int (a tuple of two ints costs ~90 bytes more per file: ~90 MB a million files).
Version = int


def version_of(size: int, mtime_ns: int) -> Version:
    """(size, mtime_ns) as one int; mtime may be negative (before 1970)."""
    return (size << 64) | (mtime_ns & 0xFFFF_FFFF_FFFF_FFFF)


# A state topic that yields nothing for this long while not at its end is an error.
STALL_SECONDS = 60.0


class StateStore(Protocol):
    def load(self) -> dict[str, Version]: ...

    def save(self, relative: str, record: SentRecord) -> None: ...


class MemoryStateStore:
    """For dry runs and unit tests: remembers for the life of the process only."""

    def __init__(self) -> None:
        self.records: dict[str, SentRecord] = {}

    def load(self) -> dict[str, Version]:
        return {path: version_of(r.size, r.mtime_ns) for path, r in self.records.items()}

    def save(self, relative: str, record: SentRecord) -> None:
        self.records[relative] = record


class KafkaStateStore:
    def __init__(
        self,
        topic: str,
        data_topic: str,
        uploader: str,
        producer: Producer,
        consumer_conf: dict[str, Any],
    ) -> None:
        self.topic = topic
        self.prefix = f"{data_topic}/{uploader}/"
        self._producer = producer
        self._consumer_conf = consumer_conf

    def load(self) -> dict[str, Version]:
        """Read the state topic from the beginning to its current end."""
        conf = dict(self._consumer_conf)
        conf.update(
            {
                "group.id": f"streamsend-state-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            }
        )
        consumer = Consumer(conf)
        records: dict[str, Version] = {}
        try:
            md = consumer.list_topics(self.topic, timeout=30)
            partitions = list(md.topics[self.topic].partitions)
            remaining: dict[int, int] = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=30
                )
                if high > low:
                    remaining[p] = high
            consumer.assign([TopicPartition(self.topic, p, -2) for p in remaining])
            last_progress = time.monotonic()
            while remaining:
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise KafkaFatal(
                        f"reading state topic {self.topic!r} stalled for {STALL_SECONDS:.0f} s"
                    )
                # Batches: a million small records one poll() at a time is slow.
                for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                    last_progress = time.monotonic()
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            remaining.pop(msg.partition() or 0, None)
                            continue
                        raise KafkaFatal(f"reading state topic {self.topic!r}: {err.str()}")
                    self._apply(msg.key(), msg.value(), records)
                    part, offset = msg.partition() or 0, msg.offset() or 0
                    if offset + 1 >= remaining.get(part, 0):
                        remaining.pop(part, None)
        finally:
            consumer.close()
        log.info("state: %d file(s) already sent by this uploader", len(records))
        return records

    def _apply(self, key: bytes | None, value: bytes | None, into: dict[str, Version]) -> None:
        if not key:
            return
        text = key.decode("utf-8", errors="replace")
        if not text.startswith(self.prefix):
            return
        relative = text[len(self.prefix) :]
        if value is None:
            into.pop(relative, None)
            return
        try:
            doc = json.loads(value)
            into[relative] = version_of(int(doc["size"]), int(doc["mtime_ns"]))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable state record for %r: %s", relative, exc)

    def save(self, relative: str, record: SentRecord) -> None:
        value = json.dumps(asdict(record), separators=(",", ":")).encode()
        key = (self.prefix + relative).encode()
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key)
                return
            except BufferError:
                self._producer.poll(0.1)
