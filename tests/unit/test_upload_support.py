"""Shared helpers for the uploader's unit tests (no tests here): settings, files, and
reading back what the uploader left on an in-memory broker."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamsend.config.loader import resolve
from streamsend.config.settings import UploaderSettings
from streamsend.transport.base import OutHeaders, Received
from streamsend.transport.memory import MemoryBroker, MemoryTransport
from streamsend.upload.service import Uploader, UploadStats
from streamsend.wire.protocol import Abort, Chunk, End, Pack, decode

TOPIC = "files"
STATE_TOPIC = "state"
UPLOADER = "up1"
CHUNK = 1000


def uploader_settings(input_dir: Path, **props: str) -> UploaderSettings:
    flags = {
        "bootstrap.servers": "memory:9092",
        "topic": TOPIC,
        "input.dir": str(input_dir),
        "uploader.name": UPLOADER,
        "file.minimum.age.ms": "0",
        "binary.chunk.size.bytes": str(CHUNK),
        "processing.state.topic": STATE_TOPIC,
        "scan.interval.ms": "10",
        # Files are chunked here, the path most tests are about; packing has its tests.
        "pack.file.max.bytes": "0",
        **props,
    }
    return resolve(UploaderSettings, environ={}, flags=flags)


def write(path: Path | str | bytes, data: bytes, age: float = 3600) -> None:
    """Write a file and backdate it (``path`` may be bytes, for names that are not
    UTF-8)."""
    fspath = os.fsencode(path)
    os.makedirs(os.path.dirname(fspath) or b".", exist_ok=True)
    with open(fspath, "wb") as fp:
        fp.write(data)
    t = time.time() - age
    os.utime(fspath, (t, t))


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7 + i // 251) % 256 for i in range(size))


class RecordingBroker(MemoryBroker):
    """A MemoryBroker that knows which records were acknowledged, and lets a test look
    at each step (``on_step``) before the broker's fault hook runs."""

    def __init__(self, on_step: Callable[[str], None] | None = None) -> None:
        super().__init__(faults=self._step)
        self.on_step = on_step
        self.last: Received | None = None
        self.acked: set[tuple[str, int, int]] = set()
        self.on_append: Callable[[Received], None] | None = None

    def append(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        partition: int | None = None,
    ) -> Received:
        record = super().append(topic, key, headers, value, partition)
        self.last = record
        if self.on_append is not None:
            self.on_append(record)
        return record

    def _step(self, step: str) -> None:
        if self.on_step is not None:
            self.on_step(step)
        # Reached only when the step did not crash: the acknowledgement follows.
        if step == "ack" and self.last is not None:
            r = self.last
            self.acked.add((r.topic, r.partition, r.offset))

    def is_acked(self, record: Received) -> bool:
        return (record.topic, record.partition, record.offset) in self.acked


@dataclass
class Transfer:
    path: str
    chunks: dict[int, bytes] = field(default_factory=dict)  # by offset
    end: End | None = None
    aborted: bool = False
    records: list[Received] = field(default_factory=list)

    def content(self) -> bytes | None:
        """The file's bytes when the transfer is complete and matches its SHA-256."""
        if self.end is None or self.aborted:
            return None
        data = bytearray()
        for offset in sorted(self.chunks):
            if offset != len(data):
                return None
            data += self.chunks[offset]
        if len(data) != self.end.size or hashlib.sha256(data).hexdigest() != self.end.sha256:
            return None
        return bytes(data)


def transfers(broker: MemoryBroker, topic: str = TOPIC) -> dict[str, Transfer]:
    """The data topic's records, grouped by transfer."""
    found: dict[str, Transfer] = {}
    for record in broker.records(topic):
        decoded = decode(record.headers, record.value)
        for msg in decoded.records() if isinstance(decoded, Pack) else [decoded]:
            t = found.setdefault(msg.transfer, Transfer(msg.path))
            t.records.append(record)
            if isinstance(msg, Chunk):
                t.chunks[msg.offset] = msg.data
            elif isinstance(msg, End):
                t.end = msg
            elif isinstance(msg, Abort):
                t.aborted = True
    return found


def complete(broker: MemoryBroker, path: str) -> list[bytes]:
    """Contents of the complete transfers of ``path`` (wire path), oldest first."""
    return [
        content
        for t in transfers(broker).values()
        if t.path == path and (content := t.content()) is not None
    ]


def state_records(broker: MemoryBroker) -> list[tuple[str, bytes | None]]:
    """(path, value) of this uploader's state records, in order, over all partitions."""
    prefix = f"{TOPIC}/{UPLOADER}/"
    return [
        (r.key.decode()[len(prefix) :], r.value)
        for r in broker.records(STATE_TOPIC)
        if r.key is not None and r.key.decode().startswith(prefix)
    ]


def run_once(
    settings: UploaderSettings,
    broker: MemoryBroker,
    max_queued: int = 1000,
    faults: Callable[[str], None] | None = None,
) -> UploadStats:
    return Uploader(
        settings, once=True, transport=MemoryTransport(broker, max_queued), faults=faults
    ).run()
