"""The manifest record of ``streamsend send``: round trip (plain, compressed, sealed),
the golden shape, and refusal of malformed or out-of-bounds manifests."""

from __future__ import annotations

import json

import pyrage
import pytest

from streamsend.errors import ProtocolError
from streamsend.wire.codecs import Codec
from streamsend.wire.protocol import (
    MAX_PACK_FILES,
    EncodedHeaders,
    Manifest,
    ManifestEntry,
    decode,
    encode,
)
from streamsend.wire.sealed import Opener, Sealer

SEND = "0123456789abcdef0123456789abcdef"
ENTRIES = tuple(
    ManifestEntry(f"{i:032x}", f"dir/file-{i}.bin", i * 1000, f"{i:064x}") for i in range(3)
)
MANIFEST = Manifest(SEND, "host-1", ENTRIES)


def _bytes(headers: EncodedHeaders) -> list[tuple[str, bytes | None]]:
    return [(n, v.encode() if isinstance(v, str) else v) for n, v in headers]


def _forged(entries: object, files: str = "1") -> tuple[list[tuple[str, bytes | None]], bytes]:
    headers = [
        ("streamsend.version", b"2"),
        ("streamsend.type", b"manifest"),
        ("streamsend.transfer", SEND.encode()),
        ("streamsend.uploader", b"u"),
        ("streamsend.files", files.encode()),
    ]
    return headers, json.dumps(entries).encode()


GOOD = {
    "streamsend.transfer": "ab" * 16,
    "streamsend.path": "a.bin",
    "streamsend.size": "5",
    "streamsend.sha256": "cd" * 32,
}


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_round_trip(codec: str) -> None:
    key, headers, value = encode(MANIFEST, Codec(codec))
    assert key == b"host-1"
    assert decode(_bytes(headers), value) == MANIFEST


def test_golden_shape() -> None:
    headers, value = _forged([GOOD])
    decoded = decode(headers, value)
    assert decoded == Manifest(SEND, "u", (ManifestEntry("ab" * 16, "a.bin", 5, "cd" * 32),))
    assert _bytes(encode(decoded)[1]) == headers


def test_sealed_manifest_hides_paths_and_opens() -> None:
    identity = pyrage.x25519.Identity.generate()
    sealer = Sealer([identity.to_public()], pad=True, record_bytes=65536)
    seal = sealer.new_file()
    manifest = Manifest(seal.transfer, "host-1", ENTRIES)
    key, headers, value = sealer.encode(manifest, Codec("none"), seal)
    assert key == b"host-1" and b"file-1" not in value
    assert not any(n == "streamsend.files" for n, _ in headers)
    assert decode(_bytes(headers), value, Opener([identity])) == manifest


@pytest.mark.parametrize(
    ("entries", "files", "why"),
    [
        ([GOOD], "2", "does not list 2"),
        ([GOOD], str(MAX_PACK_FILES + 1), "exceeds the limit"),
        ({"a": 1}, "1", "does not list 1"),
        ([["x"]], "1", "not an object of strings"),
        ([{**GOOD, "streamsend.size": 5}], "1", "not an object of strings"),
        ([{**GOOD, "streamsend.size": str(1 << 51)}], "1", "exceeds the limit"),
        ([{**GOOD, "streamsend.size": "-1"}], "1", "not a non-negative"),
        ([{**GOOD, "streamsend.sha256": "x"}], "1", "64 lower-case hex"),
        ([{**GOOD, "streamsend.transfer": "X" * 32}], "1", "32 lower-case hex"),
        ([{k: v for k, v in GOOD.items() if k != "streamsend.path"}], "1", "missing"),
        ([GOOD, {**GOOD, "streamsend.path": "b"}], "2", "twice"),
        ([GOOD, {**GOOD, "streamsend.transfer": "ef" * 16}], "2", "twice"),
    ],
)
def test_malformed_manifests_are_refused(entries: object, files: str, why: str) -> None:
    headers, value = _forged(entries, files)
    with pytest.raises(ProtocolError, match=why):
        decode(headers, value)


def test_value_that_is_not_json_is_refused() -> None:
    headers, _ = _forged([GOOD])
    with pytest.raises(ProtocolError, match="not JSON"):
        decode(headers, b"\xff{")
