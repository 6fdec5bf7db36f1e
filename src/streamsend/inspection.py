"""What a topic holds, file by file: the bookkeeping of ``streamsend inspect`` (pure).

Records in (as the transport reads them, with their partition and offset), a summary
out: per uploader and path, each version (transfer) with its size, chunks present and
expected, whether it is complete, aborted or encrypted, and where it lies on the topic.
No Kafka import and no disk: the transport reads the topic (``KafkaTransport.read_topic``)
and the CLI prints :func:`render_text` or :meth:`Inspection.document` as JSON.

Nothing read here is trusted: a record that is not Streamsend's or fails to decode is
counted and skipped, and names are escaped before they reach a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamsend.download.reassembly import RangeSet
from streamsend.errors import ProtocolError, UnsupportedVersion
from streamsend.textsafe import escape_controls
from streamsend.transport.base import Headers, Received
from streamsend.wire.protocol import (
    H_TYPE,
    H_UPLOADER,
    H_VERSION,
    SEALED_VERSION,
    T_ABORT,
    T_CHUNK,
    T_END,
    T_PACK,
    Abort,
    Chunk,
    End,
    Manifest,
    NoKey,
    NotStreamsend,
    Pack,
    Unsealer,
    decode,
)

COMPLETE = "complete"  # the end record and every chunk it counts are on the topic
INCOMPLETE = "incomplete"  # a chunk or the end record is missing
ABORTED = "aborted"  # the uploader abandoned the transfer (an abort record)
UNVERIFIED = "unverified"  # sealed, no key: the end is there, the chunk count is secret
STATUSES = (COMPLETE, INCOMPLETE, ABORTED, UNVERIFIED)

Position = tuple[int, int]  # (partition, offset)


@dataclass
class Version:
    """One transfer of one file, as far as the topic shows it."""

    uploader: str
    path: str | None  # None: sealed and no key opens it
    transfer: str | None  # None: a sealed pack no key opens (its files are unknown)
    first: Position
    last: Position
    encrypted: bool = False
    packed: bool = False
    size: int | None = None
    expected: int | None = None  # chunks, from the end record
    chunks: RangeSet = field(default_factory=RangeSet)  # indices seen, as ranges
    ended: bool = False
    aborted: bool = False

    def seen(self, where: Position) -> None:
        self.first = min(self.first, where)
        self.last = max(self.last, where)

    @property
    def present(self) -> int:
        return self.chunks.total()

    @property
    def status(self) -> str:
        if self.aborted:
            return ABORTED
        if not self.ended:
            return INCOMPLETE
        if self.expected is None:
            return UNVERIFIED
        return COMPLETE if self.chunks.covers(0, self.expected) else INCOMPLETE

    def document(self) -> dict[str, Any]:
        return {
            "transfer": self.transfer,
            "status": self.status,
            "size": self.size,
            "chunks": self.present,
            "chunks_expected": self.expected,
            "packed": self.packed,
            "encrypted": self.encrypted,
            "first": {"partition": self.first[0], "offset": self.first[1]},
            "last": {"partition": self.last[0], "offset": self.last[1]},
        }


@dataclass
class Counts:
    records: int = 0
    foreign: int = 0  # no streamsend.version header: someone else's records
    malformed: int = 0  # failed to decode (or, sealed, to open)
    unsupported: int = 0  # a protocol version we do not know


class Inspection:
    """Folds records into versions. ``unsealer`` opens sealed records (the reader's
    identities); without it, or when it holds no key for them, sealed files are known
    only by uploader and transfer id."""

    def __init__(self, unsealer: Unsealer | None = None) -> None:
        self._unsealer = unsealer
        self.versions: dict[str, Version] = {}
        self.counts = Counts()

    def add_all(self, records: Iterable[Received]) -> Inspection:
        for rec in records:
            self.add(rec)
        return self

    def add(self, rec: Received) -> None:
        self.counts.records += 1
        where = (rec.partition, rec.offset)
        try:
            msg = decode(rec.headers, rec.value, self._unsealer)
        except NotStreamsend:
            self.counts.foreign += 1
            return
        except UnsupportedVersion:
            self.counts.unsupported += 1
            return
        except NoKey as exc:
            self._sealed(rec.headers, exc.transfer, where)
            return
        except ProtocolError:
            self.counts.malformed += 1
            return
        encrypted = _header(rec.headers, H_VERSION) == str(SEALED_VERSION)
        if isinstance(msg, Manifest):
            return  # a send's list of files (streamsend send): no file of its own
        if isinstance(msg, Pack):
            for end, data in msg.files:
                v = self._version(end.transfer, end.uploader, end.path, where, encrypted)
                v.packed = True
                if data:
                    v.chunks.add(0, 1)
                self._ended(v, end)
            return
        v = self._version(msg.transfer, msg.uploader, msg.path, where, encrypted)
        if isinstance(msg, Chunk):
            v.chunks.add(msg.index, msg.index + 1)
            if v.size is None:
                v.size = msg.size
        elif isinstance(msg, End):
            self._ended(v, msg)
        elif isinstance(msg, Abort):
            v.aborted = True

    def _version(
        self, transfer: str, uploader: str, path: str | None, where: Position, encrypted: bool
    ) -> Version:
        v = self.versions.get(transfer)
        if v is None:
            v = self.versions[transfer] = Version(uploader, path, transfer, where, where)
        v.seen(where)
        v.encrypted = v.encrypted or encrypted
        return v

    @staticmethod
    def _ended(v: Version, end: End) -> None:
        v.ended = True
        v.size = end.size
        v.expected = end.chunks

    def _sealed(self, headers: Headers, transfer: str | None, where: Position) -> None:
        """A sealed record no key opens: its public headers are all there is to know."""
        uploader = _header(headers, H_UPLOADER)
        kind = _header(headers, H_TYPE)
        if uploader is None or kind not in (T_CHUNK, T_END, T_ABORT, T_PACK):
            self.counts.malformed += 1
            return
        if transfer is None:  # a pack: a whole record, but of files nobody here can name
            key = f"pack@{where[0]}:{where[1]}"
            v = self.versions[key] = Version(uploader, None, None, where, where, packed=True)
            v.encrypted = v.ended = True
            return
        v = self._version(transfer, uploader, None, where, True)
        if kind == T_CHUNK:
            index = _header(headers, "streamsend.index")
            if index is not None and index.isdigit() and len(index) <= 19:
                v.chunks.add(int(index), int(index) + 1)
        elif kind == T_END:
            v.ended = True
        elif kind == T_ABORT:
            v.aborted = True

    def files(self) -> list[tuple[str, str | None, list[Version]]]:
        """(uploader, path, versions in topic order), sorted by uploader and path; each
        sealed transfer no key opens is a file of its own (its path is unknown)."""
        by_file: dict[tuple[str, str | None, str], list[Version]] = {}
        for v in self.versions.values():
            name = (v.uploader, v.path, "") if v.path is not None else (v.uploader, None, _id(v))
            by_file.setdefault(name, []).append(v)
        ordered = sorted(
            by_file.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or "", kv[0][2])
        )
        return [(u, p, sorted(vs, key=lambda v: v.first)) for (u, p, _), vs in ordered]

    def totals(self) -> dict[str, int]:
        statuses = [v.status for v in self.versions.values()]
        return {
            "files": len(self.files()),
            "versions": len(self.versions),
            **{s: statuses.count(s) for s in STATUSES},
            "encrypted": sum(v.encrypted for v in self.versions.values()),
            "bytes": sum(v.size or 0 for v in self.versions.values()),
        }

    def document(self, topic: str, ends: dict[int, tuple[int, int]]) -> dict[str, Any]:
        """The JSON document of ``streamsend inspect --json`` (docs/operations.md)."""
        return {
            "topic": topic,
            "partitions": [
                {"partition": p, "start": low, "end": high}
                for p, (low, high) in sorted(ends.items())
            ],
            "records": vars(self.counts).copy(),
            "files": [
                {"uploader": u, "path": p, "versions": [v.document() for v in vs]}
                for u, p, vs in self.files()
            ],
            "totals": self.totals(),
        }


def render_text(inspection: Inspection, topic: str, ends: dict[int, tuple[int, int]]) -> str:
    """The listing for a terminal: every untrusted name escaped."""
    c = inspection.counts
    skipped = f"{c.foreign} foreign, {c.malformed} malformed, {c.unsupported} unsupported version"
    lines = [
        f"topic {escape_controls(topic)}: {len(ends)} partition(s), {c.records} record(s) "
        f"({skipped})"
    ]
    for uploader, path, versions in inspection.files():
        name = escape_controls(uploader)
        lines.append(f"{name}/{escape_controls(path)}" if path else f"{name} (encrypted, no key)")
        for v in versions:
            expected = "?" if v.expected is None else str(v.expected)
            size = "size ?" if v.size is None else f"{v.size} bytes"
            traits = ["packed"] * v.packed + ["encrypted" if v.encrypted else "clear"]
            lines.append(
                f"  {_id(v)}  {v.status:<10}  {size}  {v.present}/{expected} chunks  "
                f"{' '.join(traits)}  {v.first[0]}:{v.first[1]}..{v.last[0]}:{v.last[1]}"
            )
    t = inspection.totals()
    lines.append(
        f"totals: {t['files']} file(s), {t['versions']} version(s): {t[COMPLETE]} complete, "
        f"{t[INCOMPLETE]} incomplete, {t[ABORTED]} aborted, {t[UNVERIFIED]} unverified; "
        f"{t['encrypted']} encrypted; {t['bytes']} bytes"
    )
    return "\n".join(lines)


def _id(v: Version) -> str:
    return v.transfer or f"pack@{v.first[0]}:{v.first[1]}"


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return None if value is None else value.decode("utf-8", errors="replace")
    return None
