"""A lock that stops two uploaders sharing an input.dir, or two downloaders an output.dir."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from streamsend.errors import EnvironmentProblem, LockHeld


class DirectoryLock:
    """An exclusive ``flock`` on a hidden file in the directory, holding our pid.

    The kernel releases it when the process dies, so a crashed uploader never leaves
    a stale lock behind."""

    def __init__(self, path: Path, owner: str, dir_fd: int | None = None) -> None:
        """``path`` is the lock file; ``owner`` names what it protects, for the message
        (for example "input.dir '/data' ... another uploader"). With ``dir_fd``, the file
        is ``path.name`` in that directory, opened without following a symlink."""
        self.path = path
        self.owner = owner
        self._dir_fd = dir_fd
        self._fd: int | None = None

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            if self._dir_fd is None:
                fd = os.open(self.path, flags, 0o644)
            else:
                fd = os.open(self.path.name, flags | os.O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot create the lock file {str(self.path)!r}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"{self.owner} (pid {holder}); stop it or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def abandon(self) -> None:
        """Let go as the kernel does for a killed process: close, write nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
