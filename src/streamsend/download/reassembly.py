"""Reassembly bookkeeping: one :class:`Transfer` holds everything known of one transfer.

Pure. Chunks may arrive in any order, more than once, from any partition; a transfer
is complete when its End record has arrived and the received byte ranges cover
``[0, size)`` exactly. The staging area stores the bytes; this module decides which.

**First writer wins.** Only bytes not received before are ever written: a chunk that
overlaps received ranges contributes only its new bytes. So no byte on disk changes
once written, and the SHA-256 fed as bytes are written (and finished from the staged
file at delivery) is always the hash of exactly the bytes that reach the final path. A
forged chunk can make a file fail verification; it can never change a verified file.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

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

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` not in the set, in order."""
        gaps: list[tuple[int, int]] = []
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        cursor = start
        while cursor < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if e <= cursor:
                i += 1
                continue
            if s >= end:
                break
            if s > cursor:
                gaps.append((cursor, s))
            cursor = max(cursor, e)
            i += 1
        if cursor < end:
            gaps.append((cursor, end))
        return gaps

    def last_end(self) -> int:
        return self._ends[-1] if self._ends else 0

    def end_from(self, position: int) -> int:
        """Where the range holding ``position`` ends: ``position`` itself when no range
        holds it."""
        i = bisect.bisect_right(self._starts, position) - 1
        return self._ends[i] if i >= 0 and self._ends[i] > position else position

    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def as_list(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)


@dataclass
class Transfer:
    """What has arrived of one transfer, whether it is complete, and the running hash of
    its bytes from offset 0 (bytes that arrived past a gap are hashed from the staged
    file once the gap closes, see :meth:`unhashed`)."""

    transfer: str
    uploader: str
    path: str
    declared_size: int
    received: RangeSet = field(default_factory=RangeSet)
    end: End | None = None
    hasher: Any = field(default_factory=hashlib.sha256)
    hashed_upto: int = 0  # bytes [0, hashed_upto) are in hasher
    dirty: bool = True  # changed since the ledger last recorded it
    verified: bool = False  # its bytes matched the end record; waiting for delivery
    # A delivery of it was started before (by a run that crashed, or before an outage):
    # a destination that may hold it already (S3) looks before sending it again.
    redelivery: bool = False
    last_activity: float = field(default_factory=time.time)
    # When this process met it (monotonic), for the delivered line's duration.
    started: float = field(default_factory=time.monotonic, compare=False)

    @property
    def label(self) -> str:
        """uploader/path, for messages (untrusted: log it with %r)."""
        return f"{self.uploader}/{self.path}"

    def new_pieces(self, chunk: Chunk) -> list[tuple[int, int]]:
        """Validate a chunk against what we know and return the byte ranges of it that
        have not arrived before (empty for a duplicate). Changes nothing, so a caller
        stores the bytes first and records them after."""
        self._check_same_file(chunk.uploader, chunk.path)
        if chunk.size != self.declared_size:
            raise ProtocolError(
                f"chunk {chunk.index} declares size {chunk.size}, "
                f"earlier chunks {self.declared_size}"
            )
        start, stop = chunk.offset, chunk.offset + len(chunk.data)
        if self.end is not None and stop > self.end.size:
            raise ProtocolError(f"chunk {chunk.index} lies past the end of the file")
        return self.received.missing(start, stop)

    def record(self, offset: int, data: bytes | memoryview) -> None:
        """Bytes ``data`` are now stored at ``offset`` (never over received bytes)."""
        self.received.add(offset, offset + len(data))
        if offset == self.hashed_upto:
            self.hasher.update(data)
            self.hashed_upto += len(data)
        self.dirty = True
        self.last_activity = time.time()

    def unhashed(self) -> tuple[int, int]:
        """Received bytes that continue the hashed prefix but were not hashed when they
        arrived (before the gap in front of them closed): ``[hashed_upto, end)``, empty
        when there are none. The staging area hashes them from the staged file."""
        return self.hashed_upto, self.received.end_from(self.hashed_upto)

    def accept_chunk(self, chunk: Chunk) -> bool:
        """Record a chunk's new bytes without storing them; False when none were new."""
        pieces = self.new_pieces(chunk)
        view = memoryview(chunk.data)
        for start, stop in pieces:
            self.record(start, view[start - chunk.offset : stop - chunk.offset])
        return bool(pieces)

    def accept_end(self, end: End) -> None:
        self._check_same_file(end.uploader, end.path)
        if end.size != self.declared_size:
            raise ProtocolError(
                f"end record says {end.size} bytes, the chunks declared {self.declared_size}"
            )
        if self.received.last_end() > end.size:
            raise ProtocolError("chunks arrived past the size in the end record")
        if self.end is not None and self.end != end:
            raise ProtocolError("a second end record of the transfer says something else")
        if self.end is None:
            self.end = end
            self.dirty = True
        self.last_activity = time.time()

    def complete(self) -> bool:
        return self.end is not None and self.received.covers(0, self.end.size)

    def _check_same_file(self, uploader: str, path: str) -> None:
        if (uploader, path) != (self.uploader, self.path):
            raise ProtocolError(f"transfer {self.transfer} switched file mid-way")
