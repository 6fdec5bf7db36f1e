"""Wire protocol v1: encode/decode round trips and rejection of malformed records."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsend.errors import ProtocolError, UnsupportedVersion
from streamsend.wire import protocol
from streamsend.wire.protocol import (
    H_CHUNKS,
    H_INDEX,
    H_MODE,
    H_MTIME,
    H_OFFSET,
    H_PATH,
    H_REASON,
    H_SHA256,
    H_SIZE,
    H_TRANSFER,
    H_TYPE,
    H_UPLOADER,
    H_VERSION,
    MAX_CHUNKS,
    MAX_FILE_SIZE,
    MAX_HEADER_BYTES,
    MAX_REASON_CHARS,
    Abort,
    Chunk,
    End,
    Message,
    NotStreamsend,
    decode,
    encode,
)

Headers = list[tuple[str, bytes | None]]

TRANSFER = "0123456789abcdef0123456789abcdef"
SHA = "ab" * 32

CHUNK = Chunk(TRANSFER, "host-1", "dir/sub/file.bin", 2, 20, 35, b"0123456789")
END = End(TRANSFER, "host-1", "dir/sub/file.bin", 35, 4, SHA, 1_700_000_000_123_456_789, 0o640)
ABORT = Abort(TRANSFER, "host-1", "dir/sub/file.bin", "file changed while it was read")

ALL_HEADER_NAMES = [
    H_VERSION,
    H_TYPE,
    H_TRANSFER,
    H_UPLOADER,
    H_PATH,
    H_OFFSET,
    H_INDEX,
    H_SIZE,
    H_CHUNKS,
    H_SHA256,
    H_MTIME,
    H_MODE,
    H_REASON,
]


def record(msg: Message) -> tuple[Headers, bytes]:
    """Encode and normalise headers to what a Kafka consumer hands back (bytes or None)."""
    _key, headers, value = encode(msg)
    out: Headers = []
    for name, v in headers:
        out.append((name, v.encode() if isinstance(v, str) else v))
    return out, value


def with_header(headers: Headers, name: str, value: bytes | None) -> Headers:
    assert any(n == name for n, _ in headers), name
    return [(n, value if n == name else v) for n, v in headers]


def without_header(headers: Headers, name: str) -> Headers:
    assert any(n == name for n, _ in headers), name
    return [(n, v) for n, v in headers if n != name]


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("msg", [CHUNK, END, ABORT], ids=["chunk", "end", "abort"])
def test_round_trip(msg: Message) -> None:
    key, _, _ = encode(msg)
    assert key == b"host-1/dir/sub/file.bin"
    headers, value = record(msg)
    assert decode(headers, value) == msg


# Golden vectors, written out byte for byte from docs/protocol.md: the names and values on
# the wire are a contract with other implementations and with topics already written, so
# they are spelled here literally, never through the module's constants.
TID = "0123456789abcdef0123456789abcdef"
SHA_HELLO = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
GOLDEN_CHUNK_HEADERS = [
    ("streamsend.version", b"2"),
    ("streamsend.type", b"chunk"),
    ("streamsend.transfer", TID.encode()),
    ("streamsend.uploader", b"shop-7"),
    ("streamsend.path", b"a/b.txt"),
    ("streamsend.index", b"0"),
    ("streamsend.offset", b"0"),
    ("streamsend.size", b"5"),
]


def test_golden_chunk_record() -> None:
    key, headers, value = encode(Chunk(TID, "shop-7", "a/b.txt", 0, 0, 5, b"hello"))
    assert key == b"shop-7/a/b.txt"
    assert value == b"hello"
    assert [(k, bytes(v) if v is not None else None) for k, v in headers] == GOLDEN_CHUNK_HEADERS


def test_golden_end_and_abort_records() -> None:
    _, headers, value = encode(End(TID, "shop-7", "a/b.txt", 5, 1, SHA_HELLO, -1, 0o640))
    assert value == b""
    assert dict(headers) == {
        "streamsend.version": b"2",
        "streamsend.type": b"end",
        "streamsend.transfer": TID.encode(),
        "streamsend.uploader": b"shop-7",
        "streamsend.path": b"a/b.txt",
        "streamsend.size": b"5",
        "streamsend.chunks": b"1",
        "streamsend.sha256": SHA_HELLO.encode(),
        "streamsend.mtime_ns": b"-1",
        "streamsend.mode": b"640",
    }
    _, headers, _ = encode(Abort(TID, "shop-7", "a/b.txt", "changed"))
    assert dict(headers)["streamsend.type"] == b"abort"
    assert dict(headers)["streamsend.reason"] == b"changed"


def test_golden_records_decode() -> None:
    assert decode(GOLDEN_CHUNK_HEADERS, b"hello") == Chunk(
        TID, "shop-7", "a/b.txt", 0, 0, 5, b"hello"
    )


def test_version_1_records_are_still_read() -> None:
    """Topics written by version-1 uploaders stay readable: same layout, version 1."""
    v1 = [("streamsend.version", b"1"), *GOLDEN_CHUNK_HEADERS[1:]]
    assert decode(v1, b"hello") == Chunk(TID, "shop-7", "a/b.txt", 0, 0, 5, b"hello")


def test_record_key_is_uploader_slash_path() -> None:
    assert protocol.record_key("up", "a/b.txt") == b"up/a/b.txt"
    assert protocol.record_key("up", "é.txt") == "up/é.txt".encode()


def test_chunk_value_is_the_data_and_end_abort_values_are_empty() -> None:
    assert record(CHUNK)[1] == CHUNK.data
    assert record(END)[1] == b""
    assert record(ABORT)[1] == b""


def test_encoded_headers_carry_version_and_type() -> None:
    headers, _ = record(END)
    found = dict(headers)
    assert found[H_VERSION] == b"2"
    assert found[H_TYPE] == b"end"
    assert found[H_MODE] == b"640"
    assert dict(record(CHUNK)[0])[H_TYPE] == b"chunk"
    assert dict(record(ABORT)[0])[H_TYPE] == b"abort"


def test_header_order_does_not_matter() -> None:
    headers, value = record(END)
    assert decode(list(reversed(headers)), value) == END


def test_foreign_headers_are_ignored() -> None:
    headers, value = record(CHUNK)
    headers = [("traceparent", b"00-abc"), *headers, ("x-other", None)]
    assert decode(headers, value) == CHUNK


def test_end_of_empty_file_round_trips() -> None:
    empty = End(TRANSFER, "u", "empty", 0, 0, SHA, 0, 0)
    assert decode(*record(empty)) == empty


def test_abort_reason_is_truncated() -> None:
    long = Abort(TRANSFER, "u", "p", "x" * (MAX_REASON_CHARS + 50))
    headers, value = record(long)
    decoded = decode(headers, value)
    assert isinstance(decoded, Abort)
    assert decoded.reason == "x" * MAX_REASON_CHARS


def test_abort_reason_over_limit_on_the_wire_is_truncated_on_decode() -> None:
    headers, value = record(ABORT)
    headers = with_header(headers, H_REASON, b"y" * (MAX_REASON_CHARS + 1))
    decoded = decode(headers, value)
    assert isinstance(decoded, Abort)
    assert decoded.reason == "y" * MAX_REASON_CHARS


def test_numbers_at_their_limits_are_accepted() -> None:
    big = Chunk(TRANSFER, "u", "p", MAX_CHUNKS, MAX_FILE_SIZE - 1, MAX_FILE_SIZE, b"z")
    assert decode(*record(big)) == big
    end = End(TRANSFER, "u", "p", MAX_FILE_SIZE, MAX_CHUNKS, SHA, 0, 0o7777)
    assert decode(*record(end)) == end


def test_none_header_value_is_an_empty_value() -> None:
    headers, value = record(ABORT)
    decoded = decode(with_header(headers, H_REASON, None), value)
    assert isinstance(decoded, Abort)
    assert decoded.reason == ""


def test_end_with_mtime_before_1970_round_trips() -> None:
    old = End(TRANSFER, "u", "p", 0, 0, SHA, -1_000_000_000, 0o644)
    assert decode(*record(old)) == old


# -- foreign records and versions ----------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [None, [], [("content-type", b"json")], [("streamsend", b"1")], [("Streamsend.version", b"1")]],
)
def test_record_without_version_header_is_not_streamsend(headers: Headers | None) -> None:
    with pytest.raises(NotStreamsend):
        decode(headers, b"{}")


def test_not_streamsend_is_a_protocol_error() -> None:
    assert issubclass(NotStreamsend, ProtocolError)
    assert issubclass(UnsupportedVersion, ProtocolError)


@pytest.mark.parametrize("version", [b"4", b"0", b"01", b"1.0", b"v1", b"", b" 1", b"-1", None])
def test_unknown_version_is_unsupported(version: bytes | None) -> None:
    headers, value = record(CHUNK)
    with pytest.raises(UnsupportedVersion):
        decode(with_header(headers, H_VERSION, version), value)


def test_non_utf8_version_is_a_protocol_error() -> None:
    headers, value = record(CHUNK)
    with pytest.raises(ProtocolError):
        decode(with_header(headers, H_VERSION, b"\xff"), value)


# -- malformed headers ---------------------------------------------------------------

_REQUIRED = {
    "chunk": (CHUNK, [H_TYPE, H_TRANSFER, H_UPLOADER, H_PATH, H_INDEX, H_OFFSET, H_SIZE]),
    "end": (END, [H_TYPE, H_TRANSFER, H_UPLOADER, H_PATH, H_SIZE, H_CHUNKS, H_SHA256, H_MTIME]),
    "abort": (ABORT, [H_TYPE, H_TRANSFER, H_UPLOADER, H_PATH, H_REASON]),
}
_CASES = [(kind, name) for kind, (_, names) in _REQUIRED.items() for name in names]
_CASES.append(("end", H_MODE))


@pytest.mark.parametrize(("kind", "name"), _CASES)
def test_missing_header_is_a_protocol_error(kind: str, name: str) -> None:
    headers, value = record(_REQUIRED[kind][0])
    with pytest.raises(ProtocolError) as info:
        decode(without_header(headers, name), value)
    assert not isinstance(info.value, NotStreamsend | UnsupportedVersion)
    if name != H_TYPE:
        assert name in str(info.value)


@pytest.mark.parametrize(("kind", "name"), [*_CASES, ("chunk", H_VERSION)])
def test_duplicated_header_is_a_protocol_error(kind: str, name: str) -> None:
    headers, value = record(_REQUIRED[kind][0])
    original = dict(headers)[name]
    with pytest.raises(ProtocolError, match="twice"):
        decode([*headers, (name, original)], value)


@pytest.mark.parametrize(("kind", "name"), _CASES)
def test_non_utf8_header_is_a_protocol_error(kind: str, name: str) -> None:
    headers, value = record(_REQUIRED[kind][0])
    with pytest.raises(ProtocolError):
        decode(with_header(headers, name, b"\xc3\x28"), value)


@pytest.mark.parametrize("name", [H_UPLOADER, H_PATH])
def test_header_longer_than_limit_is_a_protocol_error(name: str) -> None:
    headers, value = record(CHUNK)
    with pytest.raises(ProtocolError, match="longer"):
        decode(with_header(headers, name, b"a" * (MAX_HEADER_BYTES + 1)), value)


def test_header_at_limit_is_accepted() -> None:
    headers, value = record(CHUNK)
    decoded = decode(with_header(headers, H_PATH, b"a" * MAX_HEADER_BYTES), value)
    assert isinstance(decoded, Chunk)
    assert decoded.path == "a" * MAX_HEADER_BYTES


@pytest.mark.parametrize(
    "transfer",
    [
        b"",
        b"0123456789ABCDEF0123456789ABCDEF",
        b"0123456789abcdef0123456789abcde",
        b"0123456789abcdef0123456789abcdef0",
        b"0123456789abcdef0123456789abcdeg",
        b"01234567-89ab-cdef-0123-456789abcdef",
        b" 0123456789abcdef0123456789abcdef",
        b"0123456789abcdef0123456789abcdef\n",
    ],
)
def test_bad_transfer_id_is_a_protocol_error(transfer: bytes) -> None:
    for msg in (CHUNK, END, ABORT):
        headers, value = record(msg)
        with pytest.raises(ProtocolError, match=H_TRANSFER):
            decode(with_header(headers, H_TRANSFER, transfer), value)


BAD_NUMBERS = [
    b"-1",
    b"+1",
    b"1.0",
    b"1e3",
    b"0x10",
    b"01",
    b" 1",
    b"1 ",
    b"",
    b"\xd9\xa1",  # ARABIC-INDIC DIGIT ONE
    b"1" * 20,
    b"9" * 100,
]


@pytest.mark.parametrize("text", BAD_NUMBERS)
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("chunk", H_INDEX),
        ("chunk", H_OFFSET),
        ("chunk", H_SIZE),
        ("end", H_SIZE),
        ("end", H_CHUNKS),
    ],
)
def test_bad_number_is_a_protocol_error(kind: str, name: str, text: bytes) -> None:
    headers, value = record(_REQUIRED[kind][0])
    with pytest.raises(ProtocolError):
        decode(with_header(headers, name, text), value)


@pytest.mark.parametrize(
    ("kind", "name", "limit"),
    [
        ("chunk", H_SIZE, MAX_FILE_SIZE),
        ("chunk", H_OFFSET, MAX_FILE_SIZE),
        ("chunk", H_INDEX, MAX_CHUNKS),
        ("end", H_SIZE, MAX_FILE_SIZE),
        ("end", H_CHUNKS, MAX_CHUNKS),
    ],
)
def test_number_above_limit_is_a_protocol_error(kind: str, name: str, limit: int) -> None:
    headers, value = record(_REQUIRED[kind][0])
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(with_header(headers, name, str(limit + 1).encode()), value)


@pytest.mark.parametrize(
    "text", [t for t in BAD_NUMBERS if t != b"-1"] + [b"-0", b"--1", str((1 << 62) + 1).encode()]
)
def test_bad_mtime_is_a_protocol_error(text: bytes) -> None:
    """mtime_ns is the one signed number (files may predate 1970), still strictly formed."""
    headers, value = record(END)
    with pytest.raises(ProtocolError):
        decode(with_header(headers, H_MTIME, text), value)


def test_chunk_past_declared_size_is_a_protocol_error() -> None:
    headers, value = record(CHUNK)  # offset 20, 10 bytes
    with pytest.raises(ProtocolError, match="past the declared size"):
        decode(with_header(headers, H_SIZE, b"29"), value)
    assert isinstance(decode(with_header(headers, H_SIZE, b"30"), value), Chunk)


def test_chunk_offset_beyond_size_is_a_protocol_error() -> None:
    headers, value = record(CHUNK)
    with pytest.raises(ProtocolError):
        decode(with_header(headers, H_OFFSET, b"36"), value)


@pytest.mark.parametrize("value", [b"", None])
def test_empty_chunk_is_a_protocol_error(value: bytes | None) -> None:
    headers, _ = record(CHUNK)
    with pytest.raises(ProtocolError, match="no data"):
        decode(headers, value)


@pytest.mark.parametrize("msg", [END, ABORT], ids=["end", "abort"])
def test_end_and_abort_with_a_value_are_protocol_errors(msg: Message) -> None:
    headers, _ = record(msg)
    with pytest.raises(ProtocolError, match="empty value"):
        decode(headers, b"x")


@pytest.mark.parametrize(
    "sha",
    [
        b"",
        b"AB" * 32,
        b"ab" * 31 + b"a",
        b"ab" * 32 + b"a",
        b"g" * 64,
        b"ab" * 31 + b"a ",
    ],
)
def test_bad_sha256_is_a_protocol_error(sha: bytes) -> None:
    headers, value = record(END)
    with pytest.raises(ProtocolError, match=H_SHA256):
        decode(with_header(headers, H_SHA256, sha), value)


@pytest.mark.parametrize("mode", [b"", b"8", b"9", b"12345", b"-1", b"0o644", b"rw", b" 644"])
def test_bad_mode_is_a_protocol_error(mode: bytes) -> None:
    headers, value = record(END)
    with pytest.raises(ProtocolError, match=H_MODE):
        decode(with_header(headers, H_MODE, mode), value)


@pytest.mark.parametrize("kind", [b"", b"CHUNK", b"chunk ", b"start", b"\xff"])
def test_unknown_type_is_a_protocol_error(kind: bytes) -> None:
    headers, _ = record(ABORT)
    with pytest.raises(ProtocolError):
        decode(with_header(headers, H_TYPE, kind), b"")


# -- properties ----------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=40)
_transfers = st.uuids().map(lambda u: u.hex)


@st.composite
def chunks(draw: st.DrawFn) -> Chunk:
    size = draw(st.one_of(st.integers(1, 1 << 20), st.integers(1, MAX_FILE_SIZE)))
    length = draw(st.integers(1, min(size, 64)))
    offset = draw(st.integers(0, size - length))
    data = draw(st.binary(min_size=length, max_size=length))
    index = draw(st.integers(0, MAX_CHUNKS))
    return Chunk(draw(_transfers), draw(_text), draw(_text), index, offset, size, data)


ends = st.builds(
    End,
    transfer=_transfers,
    uploader=_text,
    path=_text,
    size=st.integers(0, MAX_FILE_SIZE),
    chunks=st.integers(0, MAX_CHUNKS),
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    mtime_ns=st.integers(-(1 << 62), 1 << 62),
    mode=st.integers(0, 0o7777),
)
aborts = st.builds(
    Abort,
    transfer=_transfers,
    uploader=_text,
    path=_text,
    reason=st.text(st.characters(codec="utf-8"), max_size=MAX_REASON_CHARS),
)
messages = st.one_of(chunks(), ends, aborts)


@settings(max_examples=300)
@given(messages)
def test_property_valid_messages_round_trip(msg: Message) -> None:
    key, _, _ = encode(msg)
    assert key == f"{msg.uploader}/{msg.path}".encode()
    assert decode(*record(msg)) == msg


def _decode_or_protocol_error(headers: Headers | None, value: bytes | None) -> None:
    try:
        result = decode(headers, value)
    except ProtocolError:
        return
    assert isinstance(result, Chunk | End | Abort)


_header_values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.sampled_from([b"1", b"0", b"chunk", b"end", b"abort", TRANSFER.encode(), SHA.encode()]),
    st.integers(-5, 1 << 64).map(lambda n: str(n).encode()),
)
_header_names = st.one_of(st.sampled_from(ALL_HEADER_NAMES), st.text(max_size=20))


@settings(max_examples=300)
@given(
    st.one_of(st.none(), st.lists(st.tuples(_header_names, _header_values), max_size=16)),
    st.one_of(st.none(), st.binary(max_size=64)),
)
def test_property_arbitrary_records_only_raise_protocol_errors(
    headers: Headers | None, value: bytes | None
) -> None:
    _decode_or_protocol_error(headers, value)


def _drop(headers: Headers, i: int, _data: st.DataObject) -> Headers:
    return headers[:i] + headers[i + 1 :]


def _duplicate(headers: Headers, i: int, data: st.DataObject) -> Headers:
    copy = headers[i][1] if data.draw(st.booleans()) else data.draw(_header_values)
    return [*headers, (headers[i][0], copy)]


def _change(headers: Headers, i: int, data: st.DataObject) -> Headers:
    return [*headers[:i], (headers[i][0], data.draw(_header_values)), *headers[i + 1 :]]


def _flip_byte(headers: Headers, i: int, data: st.DataObject) -> Headers:
    old = headers[i][1] or b""
    if not old:
        return _change(headers, i, data)
    pos = data.draw(st.integers(0, len(old) - 1))
    new = old[:pos] + bytes([data.draw(st.integers(0, 255))]) + old[pos + 1 :]
    return [*headers[:i], (headers[i][0], new), *headers[i + 1 :]]


MUTATIONS: list[Callable[[Headers, int, st.DataObject], Headers]] = [
    _drop,
    _duplicate,
    _change,
    _flip_byte,
]


@settings(max_examples=300)
@given(messages, st.data())
def test_property_mutated_valid_records_only_raise_protocol_errors(
    msg: Message, data: st.DataObject
) -> None:
    headers, value = record(msg)
    for _ in range(data.draw(st.integers(1, 3))):
        mutate = data.draw(st.sampled_from(MUTATIONS))
        if not headers:
            break
        i = data.draw(st.integers(0, len(headers) - 1))
        headers = mutate(headers, i, data)
    if data.draw(st.booleans()):
        value = data.draw(st.binary(max_size=16))
    _decode_or_protocol_error(headers, value)
