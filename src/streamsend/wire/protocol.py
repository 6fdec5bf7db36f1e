"""The Streamsend wire protocol, version 2 (specified in docs/protocol.md).

Pure encode/decode between protocol messages and Kafka records (key, headers, value).
No Kafka import: the adapters hand us headers and value as plain bytes.

A transfer is one attempt to send one version of one file. It is a sequence of
``Chunk`` records (the file's bytes at given offsets) closed by one ``End`` record
(size, SHA-256, metadata) or one ``Abort`` record (the attempt was abandoned). Every
record carries the protocol version, the transfer id, the uploader name and the path,
so any record can be understood alone, in any order, from any partition.

Version 2 adds per-record compression (``streamsend.codec``), ``Pack`` records that carry
several whole small files, and the ``streamsend.partitioning`` marker of a transfer whose
chunks are spread over partitions. Version 1 records are still read.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streamsend.errors import ProtocolError, UnsupportedVersion
from streamsend.wire.codecs import NO_CODEC, Codec, decompress

PROTOCOL_VERSION = 2
# Version 3 is a version-2 record sealed end to end (wire/sealed.py, docs/security.md).
SEALED_VERSION = 3
SUPPORTED_VERSIONS = frozenset({1, 2, SEALED_VERSION})

H_VERSION = "streamsend.version"
H_TYPE = "streamsend.type"
H_TRANSFER = "streamsend.transfer"
H_UPLOADER = "streamsend.uploader"
H_PATH = "streamsend.path"
H_OFFSET = "streamsend.offset"
H_INDEX = "streamsend.index"
H_SIZE = "streamsend.size"
H_CHUNKS = "streamsend.chunks"
H_SHA256 = "streamsend.sha256"
H_MTIME = "streamsend.mtime_ns"
H_MODE = "streamsend.mode"
H_REASON = "streamsend.reason"
H_CODEC = "streamsend.codec"
H_LENGTH = "streamsend.length"
H_FILES = "streamsend.files"
H_PARTITIONING = "streamsend.partitioning"

T_CHUNK = "chunk"
T_END = "end"
T_ABORT = "abort"
T_PACK = "pack"
T_MANIFEST = "manifest"
SPREAD = "chunk"  # streamsend.partitioning of a transfer spread over partitions

# Bounds on numbers read from headers: a claim beyond them is a protocol error, so
# nothing downstream ever sizes memory or disk from an absurd header.
MAX_FILE_SIZE = 1 << 50  # 1 PiB
MAX_CHUNKS = 1 << 40
MAX_HEADER_BYTES = 8192
MAX_REASON_CHARS = 500
# A record's value, decompressed, is never larger than this (Kafka's own message limit
# is far below it): a bound for the announced streamsend.length.
MAX_VALUE_BYTES = 1 << 30
MAX_PACK_FILES = 100_000
_MANIFEST_LENGTH = struct.Struct(">I")

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_SIGNED_DECIMAL = re.compile(r"0|-?[1-9][0-9]{0,18}")
MAX_ABS_MTIME_NS = 1 << 62

Headers = Sequence[tuple[str, bytes | None]]


class NotStreamsend(ProtocolError):
    """A record with no Streamsend version header: someone else's message."""


class NoKey(ProtocolError):
    """A sealed record for which this reader holds no identity."""

    def __init__(self, message: str, transfer: str | None) -> None:
        super().__init__(message)
        self.transfer = transfer


class Unsealer(Protocol):
    """Opens a sealed (version 3) record: its public header map and value in, the
    header map and value of the version-2 record that was sealed out."""

    def unseal(self, h: dict[str, bytes], value: bytes) -> tuple[dict[str, bytes], bytes]: ...


@dataclass(frozen=True)
class Chunk:
    transfer: str
    uploader: str
    path: str
    index: int
    offset: int
    size: int  # declared size of the file when the transfer started
    data: bytes
    spread: bool = False  # the transfer's chunks are spread over partitions


@dataclass(frozen=True)
class End:
    transfer: str
    uploader: str
    path: str
    size: int
    chunks: int
    sha256: str
    mtime_ns: int
    mode: int
    spread: bool = False


@dataclass(frozen=True)
class Abort:
    transfer: str
    uploader: str
    path: str
    reason: str


@dataclass(frozen=True)
class Pack:
    """Several whole files in one record: each is one End record and its bytes. Each
    file keeps its own transfer id and is verified and delivered on its own."""

    uploader: str
    files: tuple[tuple[End, bytes], ...]

    def records(self) -> list[Chunk | End]:
        """The pack as the records that would carry each file on its own."""
        out: list[Chunk | End] = []
        for end, data in self.files:
            if data:
                out.append(Chunk(end.transfer, end.uploader, end.path, 0, 0, end.size, data))
            out.append(end)
        return out


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a send: the transfer that carries it."""

    transfer: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What one ``streamsend send`` sent, produced after every file was acknowledged.
    ``transfer`` is the send id (the transfer id of this record)."""

    transfer: str
    uploader: str
    files: tuple[ManifestEntry, ...]


Message = Chunk | End | Abort | Pack | Manifest
EncodedHeaders = list[tuple[str, str | bytes | None]]


def new_transfer_id() -> str:
    return uuid.uuid4().hex


def record_key(uploader: str, path: str) -> bytes:
    """All records of one path share a key, so one partition keeps its versions in order."""
    return f"{uploader}/{path}".encode()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's default partitioner), unsigned 32 bits."""
    m, h = 0x5BD1E995, 0x9747B28C ^ len(data)
    whole = len(data) & ~3
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def file_partition(uploader: str, path: str, partitions: int) -> int:
    """The partition of every record of a file (and of a pack holding it), computed here
    so that a file's chunked and packed versions always share one partition and stay in
    order. Kafka's Java default for a keyed record (murmur2 of the key, positive, modulo
    the partition count), so other implementations have it in their Kafka library; not
    CRC-32 (librdkafka's default), whose low bits barely change between names such as
    ``f1.bin`` and ``f2.bin`` and would put them all on one partition."""
    return (murmur2(record_key(uploader, path)) & 0x7FFFFFFF) % partitions


def _end_headers(end: End) -> list[tuple[str, bytes]]:
    return [
        (H_SIZE, str(end.size).encode()),
        (H_CHUNKS, str(end.chunks).encode()),
        (H_SHA256, end.sha256.encode()),
        (H_MTIME, str(end.mtime_ns).encode()),
        (H_MODE, format(end.mode, "o").encode()),
    ]


def _compressed(headers: EncodedHeaders, value: bytes, codec: Codec) -> bytes:
    packed = codec.compress(value)
    if packed is None:
        return value
    headers += [(H_CODEC, codec.name.encode()), (H_LENGTH, str(len(value)).encode())]
    return packed


def encode(msg: Message, codec: Codec = NO_CODEC) -> tuple[bytes, EncodedHeaders, bytes]:
    """A message as a Kafka record: (key, headers, value), the value compressed with
    ``codec`` when that makes it smaller."""
    if isinstance(msg, Pack):
        return _encode_pack(msg, codec)
    if isinstance(msg, Manifest):
        return _encode_manifest(msg, codec)
    headers: EncodedHeaders = [
        (H_VERSION, str(PROTOCOL_VERSION).encode()),
        (H_TYPE, b""),
        (H_TRANSFER, msg.transfer.encode()),
        (H_UPLOADER, msg.uploader.encode()),
        (H_PATH, msg.path.encode()),
    ]
    value = b""
    if isinstance(msg, Chunk):
        headers[1] = (H_TYPE, T_CHUNK.encode())
        headers += [
            (H_INDEX, str(msg.index).encode()),
            (H_OFFSET, str(msg.offset).encode()),
            (H_SIZE, str(msg.size).encode()),
        ]
        value = _compressed(headers, msg.data, codec)
    elif isinstance(msg, End):
        headers[1] = (H_TYPE, T_END.encode())
        headers += _end_headers(msg)
    else:
        headers[1] = (H_TYPE, T_ABORT.encode())
        headers.append((H_REASON, msg.reason[:MAX_REASON_CHARS].encode()))
    if getattr(msg, "spread", False):
        headers.append((H_PARTITIONING, SPREAD.encode()))
    return record_key(msg.uploader, msg.path), headers, value


def pack_overhead(path: str) -> int:
    """An upper bound of the bytes a file at ``path`` adds to a pack besides its own."""
    return 64 + 32 + len(path.encode()) * 6 + 250


def _encode_pack(pack: Pack, codec: Codec) -> tuple[bytes, EncodedHeaders, bytes]:
    # The manifest entries use the End record's own header names and text values, so
    # one parser validates both.
    manifest = [
        {
            H_TRANSFER: end.transfer,
            H_PATH: end.path,
            **{name: value.decode() for name, value in _end_headers(end)},
        }
        for end, _ in pack.files
    ]
    head = json.dumps(manifest, separators=(",", ":")).encode()
    value = b"".join([_MANIFEST_LENGTH.pack(len(head)), head, *(d for _, d in pack.files)])
    headers: EncodedHeaders = [
        (H_VERSION, str(PROTOCOL_VERSION).encode()),
        (H_TYPE, T_PACK.encode()),
        (H_UPLOADER, pack.uploader.encode()),
        (H_FILES, str(len(pack.files)).encode()),
    ]
    value = _compressed(headers, value, codec)
    return record_key(pack.uploader, pack.files[0][0].path), headers, value


def _encode_manifest(m: Manifest, codec: Codec) -> tuple[bytes, EncodedHeaders, bytes]:
    entries = [
        {H_TRANSFER: f.transfer, H_PATH: f.path, H_SIZE: str(f.size), H_SHA256: f.sha256}
        for f in m.files
    ]
    headers: EncodedHeaders = [
        (H_VERSION, str(PROTOCOL_VERSION).encode()),
        (H_TYPE, T_MANIFEST.encode()),
        (H_TRANSFER, m.transfer.encode()),
        (H_UPLOADER, m.uploader.encode()),
        (H_FILES, str(len(m.files)).encode()),
    ]
    value = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    return m.uploader.encode(), headers, _compressed(headers, value, codec)


def _header_map(headers: Headers | None) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name, value in headers or ():
        if name.startswith("streamsend."):
            if name in found:
                raise ProtocolError(f"header {name!r} appears twice")
            if value is not None and len(value) > MAX_HEADER_BYTES:
                raise ProtocolError(f"header {name!r} is longer than {MAX_HEADER_BYTES} bytes")
            found[name] = value or b""
    return found


def _text(h: dict[str, bytes], name: str) -> str:
    if name not in h:
        raise ProtocolError(f"header {name} is missing")
    try:
        return h[name].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"header {name} is not UTF-8") from None


def _number(h: dict[str, bytes], name: str, limit: int) -> int:
    text = _text(h, name)
    if not _DECIMAL.fullmatch(text):
        raise ProtocolError(f"header {name} is not a non-negative decimal number: {text!r}")
    value = int(text)
    if value > limit:
        raise ProtocolError(f"header {name} = {value} exceeds the limit {limit}")
    return value


def _mtime(h: dict[str, bytes]) -> int:
    """Modification times are signed: files can predate 1970."""
    text = _text(h, H_MTIME)
    if not _SIGNED_DECIMAL.fullmatch(text) or abs(int(text)) > MAX_ABS_MTIME_NS:
        raise ProtocolError(f"header {H_MTIME} is not a decimal time in nanoseconds: {text!r}")
    return int(text)


def _value(h: dict[str, bytes], value: bytes) -> bytes:
    """The record's value, decompressed when it announces a codec."""
    if H_CODEC not in h:
        return value
    length = _number(h, H_LENGTH, MAX_VALUE_BYTES)
    return decompress(_text(h, H_CODEC), value, length)


def _transfer_id(h: dict[str, bytes]) -> str:
    transfer = _text(h, H_TRANSFER)
    if not _HEX32.fullmatch(transfer):
        raise ProtocolError(f"header {H_TRANSFER} is not 32 lower-case hex digits")
    return transfer


def _end(h: dict[str, bytes], transfer: str, uploader: str, path: str, spread: bool) -> End:
    sha = _text(h, H_SHA256)
    if not _HEX64.fullmatch(sha):
        raise ProtocolError(f"header {H_SHA256} is not 64 lower-case hex digits")
    mode_text = _text(h, H_MODE)
    if not re.fullmatch(r"[0-7]{1,4}", mode_text):
        raise ProtocolError(f"header {H_MODE} is not an octal permission value")
    return End(
        transfer,
        uploader,
        path,
        size=_number(h, H_SIZE, MAX_FILE_SIZE),
        chunks=_number(h, H_CHUNKS, MAX_CHUNKS),
        sha256=sha,
        mtime_ns=_mtime(h),
        mode=int(mode_text, 8),
        spread=spread,
    )


def decode(
    headers: Headers | None, value: bytes | None, unsealer: Unsealer | None = None
) -> Message:
    """Parse a record into a message, opening a sealed one with ``unsealer``. Raises
    NotStreamsend, UnsupportedVersion, NoKey or ProtocolError; never trusts a number
    without a bound."""
    h = _header_map(headers)
    if H_VERSION not in h:
        raise NotStreamsend("record has no streamsend.version header")
    version = _text(h, H_VERSION)
    if not _DECIMAL.fullmatch(version) or int(version) not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(
            f"protocol version {version!r} is not supported (this downloader knows "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})"
        )
    if int(version) == SEALED_VERSION:
        if unsealer is None:
            transfer = _transfer_id(h) if H_TRANSFER in h else None
            raise NoKey("the record is encrypted and no identity is configured", transfer)
        h, value = unsealer.unseal(h, value or b"")
    kind = _text(h, H_TYPE)
    uploader = _text(h, H_UPLOADER)
    data = _value(h, value or b"")
    if kind == T_PACK:
        return _decode_pack(h, uploader, data)
    transfer = _transfer_id(h)
    if kind == T_MANIFEST:
        return _decode_manifest(h, transfer, uploader, data)
    path = _text(h, H_PATH)
    spread = H_PARTITIONING in h and _text(h, H_PARTITIONING) == SPREAD
    if kind == T_CHUNK:
        size = _number(h, H_SIZE, MAX_FILE_SIZE)
        offset = _number(h, H_OFFSET, MAX_FILE_SIZE)
        index = _number(h, H_INDEX, MAX_CHUNKS)
        if offset + len(data) > size:
            raise ProtocolError(
                f"chunk {index} ends at byte {offset + len(data)}, past the declared size {size}"
            )
        if not data:
            raise ProtocolError(f"chunk {index} carries no data")
        return Chunk(transfer, uploader, path, index, offset, size, bytes(data), spread)
    if data:
        raise ProtocolError(f"a {kind!r} record must have an empty value")
    if kind == T_END:
        return _end(h, transfer, uploader, path, spread)
    if kind == T_ABORT:
        return Abort(transfer, uploader, path, _text(h, H_REASON)[:MAX_REASON_CHARS])
    raise ProtocolError(f"unknown record type {kind!r}")


def _decode_pack(h: dict[str, bytes], uploader: str, data: bytes) -> Pack:
    count = _number(h, H_FILES, MAX_PACK_FILES)
    if count == 0:
        raise ProtocolError("a pack record holds no file")
    if len(data) < _MANIFEST_LENGTH.size:
        raise ProtocolError("a pack record is too short for its manifest")
    (length,) = _MANIFEST_LENGTH.unpack_from(data)
    cursor = _MANIFEST_LENGTH.size + length
    if cursor > len(data):
        raise ProtocolError("a pack's manifest runs past the end of the record")
    try:
        manifest = json.loads(data[_MANIFEST_LENGTH.size : cursor])
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("a pack's manifest is not JSON") from None
    if not isinstance(manifest, list) or len(manifest) != count:
        raise ProtocolError(f"a pack's manifest does not list {count} file(s)")
    files: list[tuple[End, bytes]] = []
    seen: set[str] = set()
    for entry in manifest:
        if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
            raise ProtocolError("a pack's manifest entry is not an object of strings")
        fields = _header_map([(k, v.encode()) for k, v in entry.items()])
        transfer = _transfer_id(fields)
        end = _end(fields, transfer, uploader, _text(fields, H_PATH), False)
        if transfer in seen:
            raise ProtocolError(f"transfer {transfer} appears twice in one pack")
        if end.chunks != (1 if end.size else 0):
            raise ProtocolError(f"a packed file must be one chunk, not {end.chunks}")
        seen.add(transfer)
        files.append((end, bytes(data[cursor : cursor + end.size])))
        cursor += end.size
    if cursor != len(data):
        raise ProtocolError("a pack's files do not add up to its length")
    return Pack(uploader, tuple(files))


def _decode_manifest(h: dict[str, bytes], send: str, uploader: str, data: bytes) -> Manifest:
    count = _number(h, H_FILES, MAX_PACK_FILES)
    try:
        listed = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("a manifest record's value is not JSON") from None
    if not isinstance(listed, list) or len(listed) != count:
        raise ProtocolError(f"a manifest record does not list {count} file(s)")
    files: list[ManifestEntry] = []
    transfers: set[str] = set()
    paths: set[str] = set()
    for item in listed:
        if not isinstance(item, dict) or not all(isinstance(v, str) for v in item.values()):
            raise ProtocolError("a manifest entry is not an object of strings")
        fields = _header_map([(k, v.encode()) for k, v in item.items()])
        sha = _text(fields, H_SHA256)
        if not _HEX64.fullmatch(sha):
            raise ProtocolError(f"a manifest entry's {H_SHA256} is not 64 lower-case hex digits")
        entry = ManifestEntry(
            _transfer_id(fields), _text(fields, H_PATH), _number(fields, H_SIZE, MAX_FILE_SIZE), sha
        )
        if entry.transfer in transfers or entry.path in paths:
            raise ProtocolError(f"a manifest lists {entry.path!r} or its transfer twice")
        transfers.add(entry.transfer)
        paths.add(entry.path)
        files.append(entry)
    return Manifest(send, uploader, tuple(files))
