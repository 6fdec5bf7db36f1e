"""The uploader's filesystem adapter: walk input.dir, or look up given paths below it, and
report candidate files."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# What identifies one version of a file on disk: a writer that replaces or rewrites the
# file changes at least one of them (ctime catches a rename over it with the same size
# and a restored mtime, and chmod/chown).
Identity = tuple[int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True)
class Candidate:
    relative: str  # '/'-separated local path below input.dir (may hold surrogate escapes)
    path: Path
    size: int
    mtime_ns: int
    inode: int
    mode: int
    ctime_ns: int

    @property
    def identity(self) -> Identity:
        return (self.size, self.mtime_ns, self.inode, self.ctime_ns)


class Walk:
    """Regular files below ``root``; symlinks (to files or directories) are not
    followed, hidden directories are not entered. A directory that cannot be listed (or
    an entry that cannot be examined) is logged, skipped and recorded in ``unlistable``
    as a local relative path ("" for ``root`` itself): the walk says nothing about what
    is below it, so nothing below it may be taken as gone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.unlistable: list[str] = []

    def __iter__(self) -> Iterator[Candidate]:
        stack = [(self.root, "")]
        while stack:
            directory, prefix = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                log.warning("cannot list %r: %s", str(directory), exc.strerror)
                self.unlistable.append(prefix.rstrip("/"))
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                relative = f"{prefix}{entry.name}"
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed between listing and stat
                except OSError as exc:
                    log.warning("cannot examine %r: %s", relative, exc.strerror)
                    self.unlistable.append(relative)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append((Path(entry.path), relative + "/"))
                elif stat.S_ISREG(st.st_mode):
                    yield Candidate(
                        relative,
                        Path(entry.path),
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ino,
                        st.st_mode,
                        st.st_ctime_ns,
                    )

    @property
    def complete(self) -> bool:
        """False when input.dir itself could not be listed."""
        return "" not in self.unlistable


class Lookup:
    """The given paths below ``root``, examined as a walk would see them, without walking:
    a regular file reached through directories that are neither hidden nor symlinks is a
    candidate. A path the walk would not report (absent, not a regular file, below a
    symlink or a hidden directory) is in ``missing``; one that cannot be examined is
    logged and in ``unlistable``, and says nothing either way."""

    def __init__(self, root: Path, relatives: Iterable[str]) -> None:
        self.root = root
        self.relatives = relatives
        self.missing: list[str] = []
        self.unlistable: list[str] = []
        # Directories already examined in this lookup: relative -> a real directory.
        self._dirs: dict[str, bool | None] = {"": True}

    def __iter__(self) -> Iterator[Candidate]:
        for relative in self.relatives:
            parent = relative.rpartition("/")[0]
            real = self._directory(parent)
            if real is None:
                self.unlistable.append(relative)
                continue
            if not real or relative.rpartition("/")[2].startswith("."):
                self.missing.append(relative)
                continue
            path = self.root / relative
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                self.missing.append(relative)
                continue
            except OSError as exc:
                log.warning("cannot examine %r: %s", relative, exc.strerror)
                self.unlistable.append(relative)
                continue
            if not stat.S_ISREG(st.st_mode):
                self.missing.append(relative)
                continue
            yield Candidate(
                relative,
                path,
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
                st.st_mode,
                st.st_ctime_ns,
            )

    def _directory(self, relative: str) -> bool | None:
        """Whether the walk would enter ``relative``: True, False, or None when it cannot
        be examined. Each component is checked, once per lookup, so a path through a
        symlinked directory is never taken for a file below input.dir."""
        if relative in self._dirs:
            return self._dirs[relative]
        parent, _, name = relative.rpartition("/")
        real = self._directory(parent)
        if real and name.startswith("."):
            real = False
        elif real:
            try:
                real = stat.S_ISDIR(os.lstat(self.root / relative).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                real = False
            except OSError:
                real = None
        self._dirs[relative] = real
        return real
