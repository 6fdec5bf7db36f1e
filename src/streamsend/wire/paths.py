"""The rules for paths on the wire, applied on both sides from this one module.

Pure: decides whether a relative path is acceptable, never touches the filesystem.

A wire path is relative, '/'-separated, valid UTF-8 in Unicode normal form C, without an
empty, ``.`` or ``..`` component, NUL, backslash or control character, at most
``MAX_DEPTH`` components of at most ``MAX_COMPONENT_BYTES`` bytes and at most
``MAX_PATH_BYTES`` bytes in all (docs/protocol.md).

- The downloader checks every path it receives with :func:`safe_relative_parts` (and the
  uploader name with :func:`safe_uploader_name`); the staging area then walks the accepted
  components with ``O_NOFOLLOW`` so a symlink planted inside ``output.dir`` cannot lead
  outside it.
- The uploader turns each local path into its wire path with :func:`wire_path`, so it
  never sends a path the downloader would refuse. Names that are not in NFC (macOS writes
  NFD) are normalised to NFC on the wire; the local file keeps its name and after.upload
  acts on the local name. When two local files of one scan map to the same wire path,
  neither is sent and both are reported as failed ("ambiguous after Unicode
  normalisation"): sending both would make one silently replace the other. Any other
  name the rules refuse (not UTF-8, backslash, control characters, too deep, too long,
  also after normalisation) is reported as failed and never renamed or deleted.
"""

from __future__ import annotations

import re
import unicodedata

from streamsend.errors import ProtocolError

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 128

# Unicode category Cc, which is exactly these 65 code points (a regular expression is
# much faster than asking unicodedata about every character of a million paths).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnsafePath(ProtocolError):
    """A path or name that could escape or confuse the output directory: refused by the
    downloader when it arrives, never sent by the uploader."""


def check_component(part: str, what: str = "path component") -> str:
    if part in ("", ".", ".."):
        raise UnsafePath(f"{what} {part!r} is empty or a relative reference")
    if "\x00" in part or "/" in part or "\\" in part:
        raise UnsafePath(f"{what} {part!r} contains NUL, '/' or '\\'")
    if _CONTROL.search(part):
        raise UnsafePath(f"{what} {part!r} contains control characters")
    if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise UnsafePath(f"{what} is longer than {MAX_COMPONENT_BYTES} bytes")
    if not unicodedata.is_normalized("NFC", part):
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


def wire_path(local: str) -> str:
    """The wire path of a local file: ``local`` is its path relative to input.dir,
    '/'-separated, as ``os.scandir`` names it (undecodable bytes as surrogate escapes).
    Raises :class:`UnsafePath` saying why the downloader would refuse it."""
    try:
        local.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(f"path {local!r} is not valid UTF-8") from None
    wire = local if local.isascii() else unicodedata.normalize("NFC", local)
    safe_relative_parts(wire)
    return wire


def is_wire_path(path: str) -> bool:
    """True when ``path`` is a valid wire path (is its own :func:`wire_path`)."""
    try:
        return wire_path(path) == path
    except UnsafePath:
        return False
