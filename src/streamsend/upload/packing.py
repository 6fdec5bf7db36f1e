"""Small files waiting to share a record (a ``Pack``, docs/protocol.md). Pure.

One buffer per partition, so that a file's packed and chunked versions share its
partition and stay in order. A buffer never grows past one record's limit, and all
buffers together hold at most a few records' worth of file data: memory stays bounded
however many partitions the topic has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamsend.wire.protocol import End, pack_overhead

Member = TypeVar("Member")


@dataclass
class PackBuffer(Generic[Member]):
    files: list[tuple[End, bytes]] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)  # what to tell of the ack
    size: int = 0  # bytes of the record so far (data and manifest, an upper bound)


class Packs(Generic[Member]):
    def __init__(self, record_limit: int, total_limit: int) -> None:
        self.record_limit = record_limit
        self.total_limit = total_limit
        self._buffers: dict[int, PackBuffer[Member]] = {}
        self._total = 0

    def fits(self, size: int, path: str) -> bool:
        """Whether a file of ``size`` bytes at ``path`` fits in a pack at all (a larger
        one, in a pack of its own, would make a record longer than the limit)."""
        return size + pack_overhead(path) <= self.record_limit

    def add(
        self, partition: int, end: End, data: bytes, member: Member
    ) -> list[tuple[int, PackBuffer[Member]]]:
        """Add one file; returns the packs to produce now, in order: its partition's
        pack when the file does not fit in it any more, and every pack when together
        they hold more than ``total_limit``."""
        ready: list[tuple[int, PackBuffer[Member]]] = []
        grow = pack_overhead(end.path) + len(data)
        buffer = self._buffers.get(partition)
        if buffer is not None and buffer.size + grow > self.record_limit:
            ready.append((partition, self._take(partition)))
        buffer = self._buffers.setdefault(partition, PackBuffer())
        buffer.files.append((end, data))
        buffer.members.append(member)
        buffer.size += grow
        self._total += grow
        if self._total > self.total_limit:
            ready += self.drain()
        return ready

    def drain(self) -> list[tuple[int, PackBuffer[Member]]]:
        """Every pack, to produce now (the end of a batch)."""
        return [(partition, self._take(partition)) for partition in list(self._buffers)]

    def _take(self, partition: int) -> PackBuffer[Member]:
        buffer = self._buffers.pop(partition)
        self._total -= buffer.size
        return buffer
