"""Which offsets the downloader may commit, and what it commits with them. Pure.

**The safe offset.** A partition's committed offset never passes the first record of a
transfer that is not delivered yet (LinkedIn's large-message client calls this the safe
offset): whoever reads the partition next, this downloader after a crash or another member
of its group after a rebalance, meets the whole transfer again and can rebuild it without
this downloader's staging area.

**Delivered after it.** Records after the safe offset may belong to transfers delivered
already. Their ids are committed with the offset, as the group's offset metadata, and a
reader that takes the partition over skips them: a rebalance without a crash delivers each
file once in the group. Whole ids, as a shortened one that matched another transfer would
make a reader skip a file it must deliver; brokers refuse metadata over
``offset.metadata.max.bytes`` (4096 by default), so at most about 120 ids, the newest.
"""

from __future__ import annotations

from streamsend.transport.base import TopicPartition

DELIVERED_PREFIX = "streamsend-delivered:"
METADATA_LIMIT = 4000
ID_CHARS = 32
MAX_IDS = (METADATA_LIMIT - len(DELIVERED_PREFIX)) // (ID_CHARS + 1)
_NOT_SEEN = 1 << 63  # the last offset of a transfer named in metadata, before we meet it


class OffsetBook:
    def __init__(self) -> None:
        self._consumed: dict[TopicPartition, int] = {}  # next record to read
        self._committed: dict[TopicPartition, tuple[int, str]] = {}
        # Per unfinished transfer and partition: [first, last] offset of its records.
        self._spans: dict[str, dict[TopicPartition, list[int]]] = {}
        # Per partition: finished transfers whose records may lie after the safe
        # offset -> the last offset of their records there.
        self._after: dict[TopicPartition, dict[str, int]] = {}

    def consumed(self, where: TopicPartition, offset: int) -> None:
        """The record at ``offset`` is applied (durable at the next checkpoint)."""
        self._consumed[where] = offset + 1

    def met(self, transfer: str, where: TopicPartition, offset: int) -> None:
        """A record of ``transfer``, which is not finished, is at ``offset``."""
        span = self._spans.setdefault(transfer, {}).setdefault(where, [offset, offset])
        span[1] = max(span[1], offset)

    def unfinished(self, transfer: str) -> None:
        """``transfer`` is no longer tracked without being delivered (expired,
        rejected, aborted): it holds no offset back, and nobody need skip it."""
        self._spans.pop(transfer, None)

    def delivered(self, transfer: str) -> None:
        """``transfer`` reached its final path: name it to the partition's next reader."""
        for where, (_, last) in self._spans.pop(transfer, {}).items():
            after = self._after.setdefault(where, {})
            after[transfer] = max(after.get(transfer, last), last)

    def skip(self, transfer: str, where: TopicPartition, offset: int, done: bool) -> bool:
        """Whether a record of ``transfer`` at ``offset`` is one to skip: named in the
        committed metadata, or finished here (``done``). Either way its offset is
        remembered, so the next reader of the partition skips it too."""
        after = self._after.get(where)
        if after is not None and transfer in after:
            last = after[transfer]
            after[transfer] = offset if last == _NOT_SEEN else max(last, offset)
            return True
        if done:
            self._after.setdefault(where, {})[transfer] = offset
        return done

    def to_commit(self) -> tuple[dict[TopicPartition, int], dict[TopicPartition, str]]:
        """(offsets, metadata) of the partitions whose safe offset or metadata changed
        since the last commit."""
        safe = dict(self._consumed)
        for spans in self._spans.values():
            for where, (first, _) in spans.items():
                if where in safe and first < safe[where]:
                    safe[where] = first
        offsets: dict[TopicPartition, int] = {}
        metadata: dict[TopicPartition, str] = {}
        for where, at in safe.items():
            after = self._after.get(where, {})
            for transfer in [t for t, last in after.items() if last < at]:
                del after[transfer]  # wholly before the offset: never read again
            newest = sorted(after, key=after.__getitem__, reverse=True)[:MAX_IDS]
            meta = DELIVERED_PREFIX + ",".join(newest) if newest else ""
            if self._committed.get(where) != (at, meta):
                offsets[where], metadata[where] = at, meta
        return offsets, metadata

    def committed(
        self, offsets: dict[TopicPartition, int], metadata: dict[TopicPartition, str]
    ) -> None:
        for where, at in offsets.items():
            self._committed[where] = (at, metadata[where])

    def assigned(self, metadata: dict[TopicPartition, str]) -> None:
        """Partitions taken over, with the metadata their last reader committed."""
        for where, meta in metadata.items():
            if meta.startswith(DELIVERED_PREFIX):
                ids = meta[len(DELIVERED_PREFIX) :].split(",")
                self._after[where] = dict.fromkeys(ids, _NOT_SEEN)

    def revoked(self, parts: list[TopicPartition]) -> None:
        """Whoever reads these next starts at their safe offsets; should they come back
        here, this downloader does the same (its staged bytes make the replayed chunks
        duplicates, not rewrites)."""
        gone = set(parts)
        for where in gone:
            self._consumed.pop(where, None)
            self._committed.pop(where, None)
            self._after.pop(where, None)
        for spans in self._spans.values():
            for where in gone & spans.keys():
                del spans[where]
