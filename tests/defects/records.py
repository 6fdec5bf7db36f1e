"""Streamsend records built by hand from docs/protocol.md, and small Kafka helpers.

Deliberately independent of the package: these tests must keep working while its modules
move, and a hand-made record is also how a hostile producer would write one.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

# keyword arguments for Producer.produce: key, value, headers and maybe partition
Record = dict[str, object]
Headers = list[tuple[str, bytes]]

MTIME_NS = 1_700_000_000_000_000_000


def new_transfer_id() -> str:
    return uuid.uuid4().hex


def key(uploader: str, path: str) -> bytes:
    return f"{uploader}/{path}".encode()


def common_headers(kind: str, transfer: str, uploader: str, path: str) -> Headers:
    return [
        ("streamsend.version", b"1"),
        ("streamsend.type", kind.encode()),
        ("streamsend.transfer", transfer.encode()),
        ("streamsend.uploader", uploader.encode()),
        ("streamsend.path", path.encode()),
    ]


def chunk(
    transfer: str, uploader: str, path: str, index: int, offset: int, size: int, data: bytes
) -> Record:
    headers = [
        *common_headers("chunk", transfer, uploader, path),
        ("streamsend.index", str(index).encode()),
        ("streamsend.offset", str(offset).encode()),
        ("streamsend.size", str(size).encode()),
    ]
    return {"key": key(uploader, path), "headers": headers, "value": data}


def end(
    transfer: str,
    uploader: str,
    path: str,
    size: int,
    chunks: int,
    sha256: str,
    mtime_ns: int = MTIME_NS,
    mode: int = 0o644,
) -> Record:
    headers = [
        *common_headers("end", transfer, uploader, path),
        ("streamsend.size", str(size).encode()),
        ("streamsend.chunks", str(chunks).encode()),
        ("streamsend.sha256", sha256.encode()),
        ("streamsend.mtime_ns", str(mtime_ns).encode()),
        ("streamsend.mode", format(mode, "o").encode()),
    ]
    return {"key": key(uploader, path), "headers": headers, "value": b""}


def abort(transfer: str, uploader: str, path: str, reason: str) -> Record:
    headers = [
        *common_headers("abort", transfer, uploader, path),
        ("streamsend.reason", reason.encode()),
    ]
    return {"key": key(uploader, path), "headers": headers, "value": b""}


@dataclass
class Transfer:
    """One genuine transfer of ``data``: its chunks and its end record."""

    uploader: str
    path: str
    data: bytes
    chunk_size: int = 1 << 20
    transfer: str = field(default_factory=new_transfer_id)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def offsets(self) -> list[int]:
        return list(range(0, len(self.data), self.chunk_size))

    def chunk(self, index: int) -> Record:
        offset = self.offsets[index]
        piece = self.data[offset : offset + self.chunk_size]
        return chunk(self.transfer, self.uploader, self.path, index, offset, len(self.data), piece)

    def chunks(self) -> list[Record]:
        return [self.chunk(i) for i in range(len(self.offsets))]

    def end(self) -> Record:
        return end(
            self.transfer,
            self.uploader,
            self.path,
            len(self.data),
            len(self.offsets),
            self.sha256,
        )

    def records(self) -> list[Record]:
        return [*self.chunks(), self.end()]


def on_partition(record: Record, partition: int) -> Record:
    return {**record, "partition": partition}


def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> None:
    """Produce in order and wait for every acknowledgement."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err.str())

    for record in records:
        while True:
            try:
                producer.produce(topic, on_delivery=delivered, **record)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0, "records not acknowledged within 60 s"
    assert not errors, errors


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[Consumed]:
    """Every record currently on ``topic``, read with a plain consumer (no group commits)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"defects-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends: dict[int, int] = {}
        starts = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        found: list[Consumed] = []
        deadline = time.monotonic() + timeout
        while ends:
            assert time.monotonic() < deadline, f"reading {topic} took over {timeout} s"
            for msg in consumer.consume(500, 1.0):
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err.str()
                    ends.pop(msg.partition(), None)
                    continue
                headers = tuple(msg.headers() or ())
                found.append(
                    Consumed(msg.partition(), msg.offset(), msg.key(), msg.value(), headers)
                )
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
        return found
    finally:
        consumer.close()
