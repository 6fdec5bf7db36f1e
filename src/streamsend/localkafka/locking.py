"""A bounded advisory lock on a directory, so two `up`/`down` runs never interleave."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamsend.errors import LockHeld

LOCK_NAME = ".lock"


@contextmanager
def dir_lock(directory: Path, *, what: str, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``directory/.lock``; wait at most ``timeout`` seconds.

    flock is released by the kernel when the holder dies, so a crashed run never leaves a
    stale lock behind (unlike a pid file).
    """
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"gave up after {timeout:.0f} s waiting for another process "
                        f"{what} in {directory} (lock {path})"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
