"""Rules for names that arrive from the topic and become paths on our disk.

Pure: decides whether a relative path is acceptable, never touches the filesystem.
The staging area (``staging.py``) then walks the accepted components with
``O_NOFOLLOW`` so a symlink planted inside ``output.dir`` cannot lead outside it.
"""

from __future__ import annotations

import unicodedata

from streamsend.errors import ProtocolError

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 128


class UnsafePath(ProtocolError):
    """A path or name from a message that could escape or confuse the output directory."""


def check_component(part: str, what: str = "path component") -> str:
    if part in ("", ".", ".."):
        raise UnsafePath(f"{what} {part!r} is empty or a relative reference")
    if "\x00" in part or "/" in part or "\\" in part:
        raise UnsafePath(f"{what} {part!r} contains NUL, '/' or '\\'")
    if any(unicodedata.category(ch) == "Cc" for ch in part):
        raise UnsafePath(f"{what} {part!r} contains control characters")
    if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise UnsafePath(f"{what} is longer than {MAX_COMPONENT_BYTES} bytes")
    if unicodedata.normalize("NFC", part) != part:
        raise UnsafePath(f"{what} {part!r} is not in Unicode normal form C")
    return part


def safe_relative_parts(path: str) -> tuple[str, ...]:
    """Split a protocol path ('/'-separated, relative) into checked components."""
    if not path:
        raise UnsafePath("path is empty")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise UnsafePath(f"path is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise UnsafePath(f"path {path!r} is absolute")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_DEPTH:
        raise UnsafePath(f"path is deeper than {MAX_DEPTH} directories")
    for part in parts:
        check_component(part)
    return parts


def safe_uploader_name(name: str) -> str:
    check_component(name, "uploader name")
    if name.startswith("."):
        raise UnsafePath(f"uploader name {name!r} starts with '.'")
    return name
