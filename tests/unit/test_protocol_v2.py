"""Protocol version 2: per-record codecs, pack records, the spread marker, partitioning."""

from __future__ import annotations

import json
import os
import struct

import cramjam
import pytest

from streamsend.errors import ProtocolError
from streamsend.wire.codecs import CODECS, Codec
from streamsend.wire.protocol import (
    Chunk,
    End,
    Pack,
    decode,
    encode,
    file_partition,
    murmur2,
)

TID = "0123456789abcdef0123456789abcdef"
TID2 = "fedcba9876543210fedcba9876543210"
SHA_HELLO = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
TEXT = b"".join(b"%d,sensor-%d,temperature,ok\n" % (i, i % 7) for i in range(5000))


def headers_of(
    record: tuple[bytes, list[tuple[str, str | bytes | None]], bytes],
) -> dict[str, bytes]:
    return {k: bytes(v) if isinstance(v, bytes) else b"" for k, v in record[1]}


@pytest.mark.parametrize("name", CODECS)
def test_each_codec_round_trips_a_chunk_and_announces_itself(name: str) -> None:
    chunk = Chunk(TID, "up", "a.csv", 0, 0, len(TEXT), TEXT)
    _, headers, value = encode(chunk, Codec(name))
    found = dict(headers)
    assert found["streamsend.codec"] == name.encode()
    assert found["streamsend.length"] == str(len(TEXT)).encode()
    assert len(value) < len(TEXT) / 2
    assert decode(headers, value) == chunk


@pytest.mark.parametrize("name", CODECS)
def test_incompressible_data_is_sent_as_it_is(name: str) -> None:
    data = os.urandom(64 * 1024)
    _, headers, value = encode(Chunk(TID, "up", "r.bin", 0, 0, len(data), data), Codec(name))
    assert value == data
    assert "streamsend.codec" not in dict(headers)


def test_golden_compressed_chunk_is_a_standard_zstd_frame() -> None:
    """Any zstd implementation reads the value: it is a plain zstd frame."""
    _, headers, value = encode(Chunk(TID, "up", "a.csv", 0, 0, len(TEXT), TEXT), Codec("zstd"))
    assert bytes(cramjam.zstd.decompress(value)) == TEXT
    assert dict(headers)["streamsend.version"] == b"2"


def test_decompression_is_bounded_by_the_announced_length() -> None:
    _, headers, value = encode(Chunk(TID, "up", "a.csv", 0, 0, len(TEXT), TEXT), Codec("zstd"))
    lying = [(k, b"100" if k == "streamsend.length" else v) for k, v in headers]
    with pytest.raises(ProtocolError, match="decompress"):
        decode(lying, value)
    longer = [
        (k, str(len(TEXT) + 1).encode() if k == "streamsend.length" else v) for k, v in headers
    ]
    with pytest.raises(ProtocolError):
        decode(longer, value)


def test_a_codec_without_length_or_an_unknown_codec_is_refused() -> None:
    _, headers, value = encode(Chunk(TID, "up", "a.csv", 0, 0, len(TEXT), TEXT), Codec("zstd"))
    no_length = [(k, v) for k, v in headers if k != "streamsend.length"]
    with pytest.raises(ProtocolError, match="length"):
        decode(no_length, value)
    unknown = [(k, b"brotli" if k == "streamsend.codec" else v) for k, v in headers]
    with pytest.raises(ProtocolError, match="codec"):
        decode(unknown, value)
    garbage = [(k, v) for k, v in headers]
    with pytest.raises(ProtocolError):
        decode(garbage, b"not zstd at all")


def test_spread_marker_round_trips() -> None:
    chunk = Chunk(TID, "up", "big.bin", 3, 300, 1000, b"x" * 100, spread=True)
    record = encode(chunk)
    assert headers_of(record)["streamsend.partitioning"] == b"chunk"
    assert decode(record[1], record[2]) == chunk
    end = End(TID, "up", "big.bin", 1000, 10, SHA_HELLO, 1, 0o644, spread=True)
    assert decode(*encode(end)[1:]) == end
    assert "streamsend.partitioning" not in headers_of(encode(Chunk(TID, "u", "p", 0, 0, 1, b"x")))


def _pack() -> Pack:
    return Pack(
        "shop-7",
        (
            (End(TID, "shop-7", "a/hello.txt", 5, 1, SHA_HELLO, 7, 0o640), b"hello"),
            (End(TID2, "shop-7", "b/empty", 0, 0, "e3" + "0" * 62, -3, 0o600), b""),
        ),
    )


def test_golden_pack_layout() -> None:
    """Written out from docs/protocol.md: 4-byte big-endian manifest length, the JSON
    manifest (End header names and values), then the files' bytes in manifest order."""
    key, headers, value = encode(_pack())
    assert key == b"shop-7/a/hello.txt"
    assert dict(headers) == {
        "streamsend.version": b"2",
        "streamsend.type": b"pack",
        "streamsend.uploader": b"shop-7",
        "streamsend.files": b"2",
    }
    (length,) = struct.unpack(">I", value[:4])
    manifest = json.loads(value[4 : 4 + length])
    assert manifest[0] == {
        "streamsend.transfer": TID,
        "streamsend.path": "a/hello.txt",
        "streamsend.size": "5",
        "streamsend.chunks": "1",
        "streamsend.sha256": SHA_HELLO,
        "streamsend.mtime_ns": "7",
        "streamsend.mode": "640",
    }
    assert manifest[1]["streamsend.size"] == "0"
    assert value[4 + length :] == b"hello"


@pytest.mark.parametrize("name", ["none", *CODECS])
def test_pack_round_trips_and_splits_into_records(name: str) -> None:
    pack = _pack()
    _, headers, value = encode(pack, Codec(name))
    decoded = decode(headers, value)
    assert decoded == pack
    assert isinstance(decoded, Pack)
    records = decoded.records()
    assert records == [
        Chunk(TID, "shop-7", "a/hello.txt", 0, 0, 5, b"hello"),
        pack.files[0][0],
        pack.files[1][0],
    ]


def _raw_pack(manifest: object, data: bytes, files: int) -> tuple[list[tuple[str, bytes]], bytes]:
    head = json.dumps(manifest).encode()
    headers = [
        ("streamsend.version", b"2"),
        ("streamsend.type", b"pack"),
        ("streamsend.uploader", b"up"),
        ("streamsend.files", str(files).encode()),
    ]
    return headers, struct.pack(">I", len(head)) + head + data


def _entry(transfer: str = TID, size: int = 5, chunks: int = 1) -> dict[str, str]:
    return {
        "streamsend.transfer": transfer,
        "streamsend.path": "x.txt",
        "streamsend.size": str(size),
        "streamsend.chunks": str(chunks),
        "streamsend.sha256": SHA_HELLO,
        "streamsend.mtime_ns": "1",
        "streamsend.mode": "644",
    }


@pytest.mark.parametrize(
    ("manifest", "data", "files", "match"),
    [
        ([_entry()], b"hello", 2, "does not list"),
        ([_entry()], b"hell", 1, "add up"),
        ([_entry()], b"hello!", 1, "add up"),
        ([_entry(), _entry()], b"hellohello", 2, "twice"),
        ([_entry(chunks=2)], b"hello", 1, "one chunk"),
        ([_entry(size=2**51)], b"hello", 1, "exceeds"),
        ({"not": "a list"}, b"", 1, "does not list"),
        (["text"], b"", 1, "object of strings"),
        ([{**_entry(), "streamsend.size": 5}], b"hello", 1, "object of strings"),
        ([], b"", 0, "no file"),
    ],
)
def test_malformed_packs_are_refused(manifest: object, data: bytes, files: int, match: str) -> None:
    headers, value = _raw_pack(manifest, data, files)
    with pytest.raises(ProtocolError, match=match):
        decode(headers, value)


def test_truncated_pack_manifest_is_refused() -> None:
    headers, value = _raw_pack([_entry()], b"hello", 1)
    with pytest.raises(ProtocolError):
        decode(headers, value[:10])
    with pytest.raises(ProtocolError):
        decode(headers, value[:2])
    with pytest.raises(ProtocolError, match="JSON"):
        decode(headers, struct.pack(">I", 3) + b"{{{")


@pytest.mark.parametrize(
    ("text", "signed"),
    [  # Kafka's own test vectors (UtilsTest.testMurmur2), as signed 32-bit numbers
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(text: str, signed: int) -> None:
    assert murmur2(text.encode()) == signed & 0xFFFFFFFF


def test_file_partition_is_kafkas_default_for_the_key() -> None:
    """Documented so another implementation places a file's records identically."""
    key = b"shop-7/a/b.txt"
    assert file_partition("shop-7", "a/b.txt", 16) == (murmur2(key) & 0x7FFFFFFF) % 16
    assert file_partition("shop-7", "a/b.txt", 1) == 0


def test_similar_names_spread_over_partitions() -> None:
    """The defect CRC-32 had: f0.bin ... f11.bin all but landed on one partition."""
    used = {file_partition("up", f"big{i}.bin", 4) for i in range(12)}
    assert used == {0, 1, 2, 3}


def test_a_stream_codec_gives_up_on_incompressible_data_and_resumes_never() -> None:
    codec = Codec("zstd").stream()
    assert codec.compress(TEXT) is not None
    assert codec.compress(os.urandom(4096)) is None
    assert codec.compress(TEXT) is not None  # one miss is not enough
    assert codec.compress(os.urandom(4096)) is None
    assert codec.compress(os.urandom(4096)) is None
    assert codec.compress(TEXT) is None  # two in a row: the rest goes as it is
    assert Codec("zstd").compress(TEXT) is not None  # only that stream gave up
