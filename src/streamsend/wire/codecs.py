"""Per-record codecs: how a record's value is compressed on the wire (docs/protocol.md).

Compression is Streamsend's, per record, not Kafka's per batch: it is announced in the
record itself (so any consumer can read it), it happens before end-to-end encryption
(which would leave Kafka nothing to compress), and a record that does not shrink is sent
as it is, so incompressible data costs the downloader nothing.

Every codec is its library's standard frame format (zstd frame, LZ4 frame, gzip member,
Snappy framing format), implemented by ``cramjam`` (one well-kept Rust library for all
four). Decompression is bounded: the record announces the decompressed length and the
output buffer has exactly that size, so a forged record cannot expand past it.
"""

from __future__ import annotations

from types import ModuleType

import cramjam

from streamsend.errors import ProtocolError

NONE = "none"
CODECS = ("zstd", "lz4", "gzip", "snappy")
# Fast levels: the chunk is on the hot path, and measured here (1 MiB of CSV-like text)
# zstd level 1 both compresses better and runs faster than its default level 3.
_LEVELS: dict[str, int | None] = {"zstd": 1, "lz4": 1, "gzip": 1, "snappy": None}
_MODULES: dict[str, ModuleType] = {name: getattr(cramjam, name) for name in CODECS}
# A record is sent compressed only when that saves at least this fraction of it.
MIN_SAVING = 1 / 32
# A file whose first values of a stream did not shrink is sent uncompressed from there on:
# trying costs the uploader (gzip compresses random data at ~70 MB/s), and media,
# archives and encrypted files are incompressible from the first chunk to the last.
GIVE_UP_AFTER = 2


class Codec:
    """What the uploader compresses values with (``compression.type``)."""

    def __init__(self, name: str) -> None:
        if name != NONE and name not in _MODULES:
            raise ValueError(f"unknown codec {name!r}")
        self.name = name

    def compress(self, data: bytes) -> bytes | None:
        """The compressed value, or None when compressing does not pay (then the value
        is sent as it is, without a codec header)."""
        if self.name == NONE or not data:
            return None
        module, level = _MODULES[self.name], _LEVELS[self.name]
        packed = module.compress(data) if level is None else module.compress(data, level=level)
        if len(packed) > len(data) * (1 - MIN_SAVING):
            return None
        return bytes(packed)

    def stream(self) -> Codec:
        """A codec for the values of one file, which stops trying after
        GIVE_UP_AFTER values in a row that did not shrink."""
        return _StreamCodec(self.name) if self.name != NONE else self


class _StreamCodec(Codec):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._misses = 0

    def compress(self, data: bytes) -> bytes | None:
        if self._misses >= GIVE_UP_AFTER:
            return None
        packed = super().compress(data)
        self._misses = 0 if packed is not None else self._misses + 1
        return packed


NO_CODEC = Codec(NONE)


def decompress(codec: str, data: bytes, length: int) -> bytes:
    """Exactly ``length`` bytes from ``data``, or ProtocolError."""
    module = _MODULES.get(codec)
    if module is None:
        raise ProtocolError(f"unknown codec {codec!r}")
    out = bytearray(length)
    try:
        written = module.decompress_into(data, out)
    except cramjam.DecompressionError as exc:
        # Includes output longer than announced: the buffer cannot hold it.
        raise ProtocolError(f"{codec} value does not decompress to {length} bytes: {exc}") from None
    if written != length:
        raise ProtocolError(f"{codec} value decompresses to {written} bytes, not {length}")
    return bytes(out)
