"""The uploader's filesystem adapter: walk input.dir and report candidate files."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    relative: str  # '/'-separated path below input.dir
    path: Path
    size: int
    mtime_ns: int
    inode: int
    mode: int


def walk(root: Path) -> Iterator[Candidate]:
    """Regular files below ``root``; symlinks (to files or directories) are not
    followed, hidden directories are not entered. Unreadable directories are logged
    and skipped rather than stopping the scan."""
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            log.warning("cannot list %r: %s", str(directory), exc.strerror)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = f"{prefix}{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between listing and stat
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(entry.path), relative + "/"))
            elif stat.S_ISREG(st.st_mode):
                yield Candidate(
                    relative, Path(entry.path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode
                )
