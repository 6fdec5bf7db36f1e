"""Reassembly bookkeeping: which bytes of which transfer have arrived.

Pure. Chunks may arrive in any order, more than once, from any partition; a transfer
is complete when its End record has arrived and the received byte ranges cover
``[0, size)`` exactly. The staging area stores the bytes; this module only counts.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from streamsend.errors import ProtocolError
from streamsend.wire.protocol import Chunk, End


class RangeSet:
    """Disjoint, sorted, half-open byte ranges. Adjacent ranges merge, so an in-order
    transfer is always a single range, whatever its size."""

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or ():
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def covers(self, start: int, end: int) -> bool:
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def as_list(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)


@dataclass
class TransferProgress:
    """What has arrived of one transfer."""

    transfer: str
    uploader: str
    path: str
    declared_size: int
    received: RangeSet = field(default_factory=RangeSet)
    end: End | None = None

    def is_new_chunk(self, chunk: Chunk) -> bool:
        """Validate a chunk against what we know; False when its bytes all arrived before.
        Changes nothing, so a caller can store the bytes first and record them after."""
        self._check_same_file(chunk.uploader, chunk.path)
        if chunk.size != self.declared_size:
            raise ProtocolError(
                f"chunk {chunk.index} declares size {chunk.size}, "
                f"earlier chunks {self.declared_size}"
            )
        start, stop = chunk.offset, chunk.offset + len(chunk.data)
        if self.end is not None and stop > self.end.size:
            raise ProtocolError(f"chunk {chunk.index} lies past the end of the file")
        return not self.received.covers(start, stop)

    def accept_chunk(self, chunk: Chunk) -> bool:
        """Record a chunk; returns False when its bytes had all arrived before."""
        if not self.is_new_chunk(chunk):
            return False
        self.received.add(chunk.offset, chunk.offset + len(chunk.data))
        return True

    def accept_end(self, end: End) -> None:
        self._check_same_file(end.uploader, end.path)
        if end.size != self.declared_size:
            raise ProtocolError(
                f"end record says {end.size} bytes, the chunks declared {self.declared_size}"
            )
        if self.received.as_list() and self.received.as_list()[-1][1] > end.size:
            raise ProtocolError("chunks arrived past the size in the end record")
        self.end = end

    def complete(self) -> bool:
        return self.end is not None and self.received.covers(0, self.end.size)

    def _check_same_file(self, uploader: str, path: str) -> None:
        if (uploader, path) != (self.uploader, self.path):
            raise ProtocolError(f"transfer {self.transfer} switched file mid-way")
