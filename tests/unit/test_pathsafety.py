"""Path rules for names that arrive from the topic."""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamsend.errors import ProtocolError
from streamsend.wire.paths import (
    MAX_COMPONENT_BYTES,
    MAX_DEPTH,
    MAX_PATH_BYTES,
    UnsafePath,
    check_component,
    safe_relative_parts,
    safe_uploader_name,
    wire_path,
)


def test_unsafe_path_is_a_protocol_error() -> None:
    assert issubclass(UnsafePath, ProtocolError)


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("file.txt", ("file.txt",)),
        ("a/b/c.bin", ("a", "b", "c.bin")),
        (".hidden/x", (".hidden", "x")),
        ("a..b/c...", ("a..b", "c...")),
        ("données/été/файл.txt", ("données", "été", "файл.txt")),
        ("日本語/ファイル.csv", ("日本語", "ファイル.csv")),
        ("caf\u00e9", ("caf\u00e9",)),
        ("with space/ tab-less name ", ("with space", " tab-less name ")),
        ("~/x", ("~", "x")),
    ],
)
def test_accepts_normal_paths(path: str, parts: tuple[str, ...]) -> None:
    assert safe_relative_parts(path) == parts


@pytest.mark.parametrize(
    "path",
    [
        "",
        "..",
        ".",
        "../x",
        "a/../b",
        "a/..",
        "a/./b",
        "./a",
        "a//b",
        "a/",
        "/",
        "/etc/passwd",
        "//x",
        "a\\b",
        "..\\x",
        "a\x00b",
        "a/b\x00",
        "a\nb",
        "a\tb",
        "a\rb",
        "a\x1bb",
        "a\x7fb",
        "a\x85b",
        "e\u0301",
        "dir/cafe\u0301.txt",
        "A\u030a",
    ],
)
def test_rejects_unsafe_paths(path: str) -> None:
    with pytest.raises(UnsafePath):
        safe_relative_parts(path)


def test_component_length_limit_is_in_bytes() -> None:
    assert safe_relative_parts("a" * MAX_COMPONENT_BYTES) == ("a" * MAX_COMPONENT_BYTES,)
    with pytest.raises(UnsafePath):
        safe_relative_parts("a" * (MAX_COMPONENT_BYTES + 1))
    # 128 two-byte characters: 128 characters but 256 bytes.
    with pytest.raises(UnsafePath):
        safe_relative_parts("é" * 128)
    assert safe_relative_parts("é" * 127) == ("é" * 127,)


def test_path_length_limit_is_in_bytes() -> None:
    # 20 components of 200 bytes, one of 76 and 20 slashes: exactly 4096 bytes.
    at_limit = "/".join(["a" * 200] * 20 + ["b" * 76])
    assert len(at_limit.encode()) == MAX_PATH_BYTES
    assert len(safe_relative_parts(at_limit)) == 21
    with pytest.raises(UnsafePath):
        safe_relative_parts(at_limit + "c")
    with pytest.raises(UnsafePath):
        safe_relative_parts("/".join(["é" * 100] * 21))  # 4220 bytes, 2120 characters


def test_depth_limit() -> None:
    assert len(safe_relative_parts("/".join(["d"] * MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(UnsafePath, match="deeper"):
        safe_relative_parts("/".join(["d"] * (MAX_DEPTH + 1)))


def test_check_component_names_what_it_checks() -> None:
    with pytest.raises(UnsafePath, match="uploader name"):
        check_component("..", "uploader name")
    assert check_component("ok") == "ok"


@pytest.mark.parametrize("name", ["host-1", "uploader", "a.b_c", "é"])
def test_accepts_uploader_names(name: str) -> None:
    assert safe_uploader_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", ".streamsend", "a/b", "a\\b", "a\x00", "e\u0301", "x" * 256]
)
def test_rejects_uploader_names(name: str) -> None:
    with pytest.raises(UnsafePath):
        safe_uploader_name(name)


_path_alphabet = st.one_of(
    st.sampled_from(["/", ".", "..", "a", "\\", "\x00", "\n", "é", "e\u0301", "~", " "]),
    st.characters(codec="utf-8"),
)


@settings(max_examples=300)
@given(
    st.one_of(
        st.text(st.characters(codec="utf-8")),
        st.lists(_path_alphabet, max_size=30).map("".join),
    )
)
@example("../../etc/passwd")
@example("a/../../b")
@example("/abs")
@example("..")
def test_property_accepted_paths_stay_under_the_base(path: str) -> None:
    base = "/srv/out/uploader"
    try:
        parts = safe_relative_parts(path)
    except UnsafePath:
        return
    assert parts
    assert ".." not in parts
    assert "." not in parts
    assert all(p and "/" not in p and "\x00" not in p for p in parts)
    joined = os.path.join(base, *parts)
    normalised = os.path.normpath(joined)
    assert normalised.startswith(base + "/")
    assert normalised == joined  # nothing for normpath to collapse
    assert "/".join(parts) == path


# -- the uploader's side: local names to wire paths --------------------------------------


@pytest.mark.parametrize(
    ("local", "wire"),
    [
        ("a.txt", "a.txt"),
        ("dir/sub/file.bin", "dir/sub/file.bin"),
        ("caf\u00e9/x", "caf\u00e9/x"),
        # macOS writes names in NFD: the wire carries NFC (the local name is not changed).
        ("cafe\u0301/e\u0301te\u0301.txt", "caf\u00e9/\u00e9t\u00e9.txt"),
        ("A\u030angstro\u0308m", "\u00c5ngstr\u00f6m"),
        ("/".join(["d"] * MAX_DEPTH), "/".join(["d"] * MAX_DEPTH)),
    ],
)
def test_wire_path_is_the_nfc_of_the_local_path(local: str, wire: str) -> None:
    assert wire_path(local) == wire
    assert safe_relative_parts(wire_path(local))  # what the downloader accepts


# U+0958 is 3 bytes in UTF-8, and 6 in NFC (U+0915 U+093C): normalising can push a name
# over a limit it was under locally.
QA = "\u0958"


@pytest.mark.parametrize(
    ("local", "why"),
    [
        ("bad\udcff.bin", "not valid UTF-8"),  # what os.scandir gives for b"bad\xff.bin"
        ("dir\udce9/x", "not valid UTF-8"),
        ("a\\b.txt", "NUL, '/' or '\\\\'"),
        ("a\x01b", "control"),
        ("new\nline", "control"),
        ("del\x7f", "control"),
        ("/".join(["d"] * (MAX_DEPTH + 1)), "deeper"),
        ("x" * (MAX_COMPONENT_BYTES + 1), f"longer than {MAX_COMPONENT_BYTES} bytes"),
        (QA * 85, f"longer than {MAX_COMPONENT_BYTES} bytes"),  # 255 bytes, 510 in NFC
        ("/".join([QA * 40] * 18), f"longer than {MAX_PATH_BYTES} bytes"),  # 2177 -> 4337
    ],
)
def test_wire_path_refuses_what_the_downloader_refuses(local: str, why: str) -> None:
    with pytest.raises(UnsafePath, match=why):
        wire_path(local)


@settings(max_examples=300)
@given(st.lists(_path_alphabet, max_size=30).map("".join))
def test_property_a_wire_path_is_always_accepted_by_the_downloader(local: str) -> None:
    try:
        wire = wire_path(local)
    except UnsafePath:
        return
    assert safe_relative_parts(wire) == tuple(wire.split("/"))
