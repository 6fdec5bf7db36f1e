"""SHA-256 of staged bytes on a worker thread, off the thread that polls and writes.

Hashing is the largest single cost of a download (about 0.6 s of CPU per GiB here, as
much as polling and writing together), and hashlib releases the GIL while it works. So
the staging area hands a transfer's running hash to one :class:`HashWorker`: the
downloader's thread queues each piece after writing it and goes on polling while the
worker hashes. Nothing durable depends on the hash until verification, which waits for it.
Bytes already staged (those that arrived past a gap, hashed once it closes) are read back
by the worker too, from a duplicate of the staged file's descriptor, into one reused
buffer.

- **Order.** One queue, one thread: the pieces of a hash are hashed in the order given.
- **Constant memory.** The queue holds at most ``limit`` bytes (one piece whatever its
  size; a read-back, which holds a descriptor, counts as a quarter of it); a caller waits
  for room. Pieces below
  ``INLINE_BELOW`` are hashed at once when nothing of their hash is queued: handing them
  over would cost more than hashing them.
- **Immutable bytes only.** A queued piece is read later, so a buffer that could change
  meanwhile (a ``bytearray`` a decoder filled) is copied first; ``bytes`` never are.
  Staged bytes never change once written (the first writer wins), so reading them later
  reads what was received.
- **Errors** of the worker (a read-back that fails or finds the file shorter) are raised
  by the next :meth:`LaggingHash.hexdigest` of the hash they concern.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

HASH_QUEUE_BYTES = 16 * 1024 * 1024
INLINE_BELOW = 64 * 1024
READ_BLOCK = 1024 * 1024

Buffer = bytes | bytearray | memoryview


class StagedBytesMissing(Exception):
    """A read-back found the staged file shorter than the bytes recorded in it."""


@dataclass(frozen=True)
class _Staged:
    """Bytes ``[offset, offset + length)`` of a staged file, read by the worker through
    its own descriptor ``fd`` (closed once read)."""

    fd: int
    offset: int
    length: int


def _immutable(data: Buffer) -> bytes | memoryview:
    if isinstance(data, bytes):
        return data
    view = memoryview(data)
    return view if isinstance(view.obj, bytes) and view.readonly else bytes(view)


def _cost(job: bytes | memoryview | _Staged, limit: int) -> int:
    # A read-back holds a descriptor, not its bytes: a quarter of the queue each keeps
    # at most four such descriptors open.
    return limit // 4 if isinstance(job, _Staged) else len(job)


class HashWorker:
    """One thread hashing queued pieces in order; started on first use."""

    def __init__(self, limit: int = HASH_QUEUE_BYTES) -> None:
        self._limit = limit
        self._cond = threading.Condition()
        self._jobs: deque[tuple[LaggingHash, bytes | memoryview | _Staged]] = deque()
        self._queued = 0  # bytes in _jobs and the piece being hashed
        self._thread: threading.Thread | None = None
        self._closed = False
        self._buffer: bytearray | None = None  # the worker's, for read-backs

    def new_hash(self, base: Any = None) -> LaggingHash:
        """A hash whose updates run here, continuing ``base`` (a hashlib object with
        nothing pending) or starting a new SHA-256."""
        return LaggingHash(self, hashlib.sha256() if base is None else base)

    def _submit(self, target: LaggingHash, data: Buffer | _Staged) -> None:
        with self._cond:
            if not isinstance(data, _Staged) and target.pending == 0 and len(data) < INLINE_BELOW:
                self._refuse_if_closed(data)
                target.digest_state.update(data)
                return
            job = data if isinstance(data, _Staged) else _immutable(data)
            cost = _cost(job, self._limit)
            self._refuse_if_closed(job)
            while self._queued and self._queued + cost > self._limit:
                self._cond.wait()
                self._refuse_if_closed(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamsend-hash", daemon=True
                )
                self._thread.start()
            self._jobs.append((target, job))
            self._queued += cost
            target.pending += 1
            self._cond.notify_all()

    def _refuse_if_closed(self, job: Buffer | _Staged) -> None:
        if self._closed:
            if isinstance(job, _Staged):
                os.close(job.fd)
            raise RuntimeError("the hash worker is closed")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                target, job = self._jobs.popleft()
            try:
                if target.error is None:
                    if isinstance(job, _Staged):
                        self._hash_staged(target, job)
                    else:
                        target.digest_state.update(job)  # releases the GIL
            except BaseException as exc:  # handed to the hash's owner
                target.error = exc
            finally:
                if isinstance(job, _Staged):
                    os.close(job.fd)
            with self._cond:
                self._queued -= _cost(job, self._limit)
                target.pending -= 1
                self._cond.notify_all()

    def _hash_staged(self, target: LaggingHash, staged: _Staged) -> None:
        if self._buffer is None:
            self._buffer = bytearray(READ_BLOCK)
        view = memoryview(self._buffer)
        offset, end = staged.offset, staged.offset + staged.length
        while offset < end:
            got = os.preadv(staged.fd, [view[: min(READ_BLOCK, end - offset)]], offset)
            if got == 0:
                raise StagedBytesMissing(f"the staged file ends at {offset}, before {end}")
            target.digest_state.update(view[:got])
            offset += got

    def _wait(self, target: LaggingHash) -> None:
        with self._cond:
            while target.pending:
                self._cond.wait()

    def queued_bytes(self) -> int:
        with self._cond:
            return self._queued

    def close(self) -> None:
        """Stop the thread once the piece it is hashing is done; what is still queued is
        dropped (nobody will ask for it)."""
        with self._cond:
            self._closed = True
            for target, job in self._jobs:
                target.pending -= 1
                target.error = target.error or RuntimeError("the hash worker was closed")
                self._queued -= _cost(job, self._limit)
                if isinstance(job, _Staged):
                    with contextlib.suppress(OSError):
                        os.close(job.fd)
            self._jobs.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()


class LaggingHash:
    """A SHA-256 whose updates run on a :class:`HashWorker`; :meth:`hexdigest` waits for
    them. Used like a hashlib object by :class:`~streamsend.download.reassembly.Transfer`."""

    def __init__(self, worker: HashWorker, state: Any) -> None:
        self._worker = worker
        self.digest_state = state  # the hashlib object; only the worker touches it while
        self.pending = 0  # pieces are queued (changed under the worker's lock)
        self.error: BaseException | None = None

    def update(self, data: Buffer) -> None:
        self._worker._submit(self, data)

    def update_from(self, fd: int, offset: int, length: int) -> None:
        """Queue bytes ``[offset, offset + length)`` of the file open as ``fd``; the
        worker reads them through a duplicate of ``fd``, so the caller may close it."""
        if length > 0:
            self._worker._submit(self, _Staged(os.dup(fd), offset, length))

    def hexdigest(self) -> str:
        self._worker._wait(self)
        if self.error is not None:
            raise self.error
        return str(self.digest_state.hexdigest())
