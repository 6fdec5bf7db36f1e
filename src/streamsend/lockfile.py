"""A lock that stops two uploaders from sharing one input directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from streamsend.errors import LockHeld

LOCK_NAME = ".streamsend-uploader.lock"


class DirectoryLock:
    """An exclusive ``flock`` on a hidden file in the directory, holding our pid.

    The kernel releases it when the process dies, so a crashed uploader never leaves
    a stale lock behind."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"input.dir {str(self.path.parent)!r} is in use by another uploader "
                f"(pid {holder}); stop it or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
