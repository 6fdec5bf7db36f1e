"""The Streamsend wire protocol, version 1 (specified in docs/protocol.md).

Pure encode/decode between protocol messages and Kafka records (key, headers, value).
No Kafka import: the adapters hand us headers and value as plain bytes.

A transfer is one attempt to send one version of one file. It is a sequence of
``Chunk`` records (the file's bytes at given offsets) closed by one ``End`` record
(size, SHA-256, metadata) or one ``Abort`` record (the attempt was abandoned). Every
record carries the protocol version, the transfer id, the uploader name and the path,
so any record can be understood alone, in any order, from any partition.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from streamsend.errors import ProtocolError, UnsupportedVersion

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

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

T_CHUNK = "chunk"
T_END = "end"
T_ABORT = "abort"

# Bounds on numbers read from headers: a claim beyond them is a protocol error, so
# nothing downstream ever sizes memory or disk from an absurd header.
MAX_FILE_SIZE = 1 << 50  # 1 PiB
MAX_CHUNKS = 1 << 40
MAX_HEADER_BYTES = 8192
MAX_REASON_CHARS = 500

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_SIGNED_DECIMAL = re.compile(r"0|-?[1-9][0-9]{0,18}")
MAX_ABS_MTIME_NS = 1 << 62

Headers = Sequence[tuple[str, bytes | None]]


class NotStreamsend(ProtocolError):
    """A record with no Streamsend version header: someone else's message."""


@dataclass(frozen=True)
class Chunk:
    transfer: str
    uploader: str
    path: str
    index: int
    offset: int
    size: int  # declared size of the file when the transfer started
    data: bytes


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


@dataclass(frozen=True)
class Abort:
    transfer: str
    uploader: str
    path: str
    reason: str


Message = Chunk | End | Abort


def new_transfer_id() -> str:
    return uuid.uuid4().hex


def record_key(uploader: str, path: str) -> bytes:
    """All records of one path share a key, so one partition keeps its versions in order."""
    return f"{uploader}/{path}".encode()


def encode(msg: Message) -> tuple[bytes, list[tuple[str, str | bytes | None]], bytes]:
    """A message as a Kafka record: (key, headers, value)."""
    headers: list[tuple[str, str | bytes | None]] = [
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
        value = msg.data
    elif isinstance(msg, End):
        headers[1] = (H_TYPE, T_END.encode())
        headers += [
            (H_SIZE, str(msg.size).encode()),
            (H_CHUNKS, str(msg.chunks).encode()),
            (H_SHA256, msg.sha256.encode()),
            (H_MTIME, str(msg.mtime_ns).encode()),
            (H_MODE, format(msg.mode, "o").encode()),
        ]
    else:
        headers[1] = (H_TYPE, T_ABORT.encode())
        headers.append((H_REASON, msg.reason[:MAX_REASON_CHARS].encode()))
    return record_key(msg.uploader, msg.path), headers, value


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


def decode(headers: Headers | None, value: bytes | None) -> Message:
    """Parse a record into a message. Raises NotStreamsend, UnsupportedVersion or
    ProtocolError; never trusts a number without a bound."""
    h = _header_map(headers)
    if H_VERSION not in h:
        raise NotStreamsend("record has no streamsend.version header")
    version = _text(h, H_VERSION)
    if not _DECIMAL.fullmatch(version) or int(version) not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(
            f"protocol version {version!r} is not supported (this downloader knows "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})"
        )
    kind = _text(h, H_TYPE)
    transfer = _text(h, H_TRANSFER)
    if not _HEX32.fullmatch(transfer):
        raise ProtocolError(f"header {H_TRANSFER} is not 32 lower-case hex digits")
    uploader = _text(h, H_UPLOADER)
    path = _text(h, H_PATH)
    data = value or b""
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
        return Chunk(transfer, uploader, path, index, offset, size, bytes(data))
    if data:
        raise ProtocolError(f"a {kind!r} record must have an empty value")
    if kind == T_END:
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
        )
    if kind == T_ABORT:
        return Abort(transfer, uploader, path, _text(h, H_REASON)[:MAX_REASON_CHARS])
    raise ProtocolError(f"unknown record type {kind!r}")
