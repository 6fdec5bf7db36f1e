"""The uploader's change feed: input.dir watched with inotify, so a file is picked up as
it arrives instead of at the next full scan.

inotify watches one directory, not a tree: every directory below input.dir gets its own
watch, added at start and whenever a directory appears (created, or moved in). A
directory that appears may already hold files (they can land before its watch exists),
so its files are reported when its watch is added; the watch is added before it is
listed, so a file is either listed or produces an event, never neither.

What it reports are hints, not decisions: paths below input.dir that may have changed,
or ``rescan`` when events were lost (the kernel's queue overflowed, too many changes at
once) and only a full scan can tell. The planner looks at each path itself.

Like the scanner, it does not enter hidden directories and does not follow symlinks;
hidden names (the uploader's lock, writers' temporary files) and names the selection
rules refuse are not reported.

``inotify_simple`` is the adapter's only dependency: a thin wrapper of the system calls
that exposes the descriptor, so the uploader waits on it with a timeout in its own loop
(no thread, no event model of its own).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# More changed paths than this at once (a large tree moved in, a flood of arrivals) are
# not remembered one by one: a full scan is cheaper than a set of that size, and keeps the
# watcher's memory bounded.
MAX_PENDING_PATHS = 10_000

# inotify event bits (<sys/inotify.h>), so that this module imports on any platform.
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

WATCH_MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_TO
    | IN_CREATE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    # A symlink to a directory is not watched (the scanner does not follow it either),
    # and a directory replaced by something else between listing and watching is skipped.
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    # No events for files already unlinked but still open.
    | IN_EXCL_UNLINK
)
_SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT
_DIR_APPEARS = IN_CREATE | IN_MOVED_TO | IN_ATTRIB  # ATTRIB: may now be listable
_DIR_LEAVES = IN_DELETE | IN_MOVED_FROM


class WatchUnavailable(Exception):
    """input.dir cannot be watched (not Linux, no inotify, or a kernel limit such as
    fs.inotify.max_user_watches); the message says why."""


class _INotify(Protocol):
    """What the watcher uses of ``inotify_simple.INotify`` (a seam for tests)."""

    def add_watch(self, path: Any, mask: int) -> int: ...
    def rm_watch(self, wd: int) -> None: ...
    def read(self, timeout: int | None = None) -> Iterable[Any]: ...
    def close(self) -> None: ...


@dataclass
class Changes:
    """What happened since the last :meth:`Watcher.changes`."""

    paths: set[str] = field(default_factory=set)  # '/'-separated, relative to input.dir
    rescan: bool = False  # events were lost: only a full scan can tell what changed


class Watcher:
    def __init__(self, root: Path, wanted: Callable[[str], bool] = lambda _relative: True) -> None:
        """Watch ``root`` and every directory below it. ``wanted(relative)`` says whether
        a file's changes are worth reporting. Raises :class:`WatchUnavailable`."""
        self.root = root
        self.wanted = wanted
        self.lost = False  # input.dir itself was removed, moved or unmounted
        self._inotify = _open_inotify()
        self._dirs: dict[int, str] = {}  # watch descriptor -> relative directory
        self._wds: dict[str, int] = {}  # relative directory -> watch descriptor
        self._pending = Changes()
        try:
            self._add_tree("", report=False)
        except BaseException:
            self.close()
            raise
        if "" not in self._wds:
            self.close()
            raise WatchUnavailable(f"{str(root)!r} cannot be watched")

    @property
    def watches(self) -> int:
        return len(self._wds)

    def changes(self, timeout: float) -> Changes:
        """Wait up to ``timeout`` seconds for the first event, then return everything
        that happened. Raises :class:`WatchUnavailable` when a new directory cannot be
        watched (a kernel limit): its changes would go unseen."""
        events = self._inotify.read(timeout=max(0, round(timeout * 1000)))
        for event in events:
            self._handle(event.wd, event.mask, event.name)
        found, self._pending = self._pending, Changes()
        return found

    def close(self) -> None:
        self._inotify.close()
        self._dirs.clear()
        self._wds.clear()

    # -- events --------------------------------------------------------------------

    def _handle(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self._overflow()
            return
        directory = self._dirs.get(wd)
        if directory is None:
            return  # a watch already dropped (its directory left): nothing to map it to
        if mask & (IN_IGNORED | _SELF_GONE):
            if directory == "":
                self.lost = True
                self._overflow()
            elif mask & IN_IGNORED:
                self._drop(wd)
            return
        if not name or name.startswith("."):
            return
        relative = f"{directory}/{name}" if directory else name
        if mask & IN_ISDIR:
            if mask & _DIR_LEAVES:
                self._drop_tree(relative)
            elif mask & _DIR_APPEARS and relative not in self._wds:
                self._add_tree(relative, report=True)
            return
        self._report(relative)

    def _report(self, relative: str) -> None:
        pending = self._pending
        if pending.rescan or not self.wanted(relative):
            return
        pending.paths.add(relative)
        if len(pending.paths) > MAX_PENDING_PATHS:
            self._overflow()

    def _overflow(self) -> None:
        self._pending.rescan = True
        self._pending.paths.clear()

    # -- watches -------------------------------------------------------------------

    def _add_tree(self, top: str, report: bool) -> None:
        """Watch ``top`` and the directories below it; with ``report``, report the files
        found in them (they may have arrived before their directory was watched)."""
        stack = [top]
        while stack:
            relative = stack.pop()
            path = self.root / relative if relative else self.root
            try:
                wd = self._inotify.add_watch(path, WATCH_MASK)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                    raise WatchUnavailable(
                        f"the kernel refused another watch ({exc.strerror}); "
                        "fs.inotify.max_user_watches may be too low for this tree"
                    ) from exc
                # Gone, replaced by a file or a symlink, or not readable: nothing to watch
                # (an unreadable directory cannot be scanned either; a change of its
                # permissions is an IN_ATTRIB on its parent, which tries again).
                log.debug("not watching %r: %s", relative, exc.strerror)
                continue
            self._dirs[wd] = relative
            self._wds[relative] = wd
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        child = f"{relative}/{entry.name}" if relative else entry.name
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(child)
                            elif report and entry.is_file(follow_symlinks=False):
                                self._report(child)
                        except OSError:
                            continue  # the scan examines it, and says why it cannot
            except OSError as exc:
                log.debug("cannot list %r: %s", relative, exc.strerror)

    def _drop_tree(self, top: str) -> None:
        """A directory left (deleted, or moved elsewhere): stop watching it and everything
        below it. A directory moved out of input.dir keeps its watches otherwise, and its
        events would be taken for changes at its old path."""
        prefix = top + "/"
        for relative in [r for r in self._wds if r == top or r.startswith(prefix)]:
            wd = self._wds[relative]
            self._drop(wd)
            with contextlib.suppress(OSError):  # already gone with its directory
                self._inotify.rm_watch(wd)

    def _drop(self, wd: int) -> None:
        relative = self._dirs.pop(wd, None)
        if relative is not None and self._wds.get(relative) == wd:
            del self._wds[relative]


def _open_inotify() -> _INotify:
    try:
        # Untyped (no py.typed): the _INotify protocol above types what we use of it.
        from inotify_simple import INotify  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:  # not Linux: the dependency is not installed there
        raise WatchUnavailable(f"inotify is not available here ({exc})") from exc
    try:
        inotify: _INotify = INotify()
    except (OSError, AttributeError) as exc:  # AttributeError: no inotify_init1 in libc
        why = getattr(exc, "strerror", None) or str(exc)
        raise WatchUnavailable(f"inotify cannot be started ({why})") from exc
    return inotify
