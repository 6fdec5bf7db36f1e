"""SHA-256 of staged bytes on a worker thread, off the thread that polls and writes.

Hashing is the largest single cost of a download (about 0.6 s of CPU per GiB here, as
much as polling and writing together), and hashlib releases the GIL while it works. So
the staging area hands a transfer's running hash to one :class:`HashWorker`: the
downloader's thread queues each piece after writing it and goes on polling while the
worker hashes. Nothing durable depends on the hash until verification, which waits for it.

- **Order.** One queue, one thread: the pieces of a hash are hashed in the order given.
- **Constant memory.** The queue holds at most ``limit`` bytes (one piece whatever its
  size); a caller waits for room. Pieces below ``INLINE_BELOW`` are hashed at once when
  nothing of their hash is queued: handing them over would cost more than hashing them.
- **Immutable bytes only.** A queued piece is read later, so a buffer that could change
  meanwhile (a ``bytearray`` a decoder filled) is copied first; ``bytes`` never are.
- **Errors** of the worker (only ``MemoryError`` is conceivable) are raised by the next
  :meth:`LaggingHash.hexdigest` of the hash they concern.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from typing import Any

HASH_QUEUE_BYTES = 16 * 1024 * 1024
INLINE_BELOW = 64 * 1024

Buffer = bytes | bytearray | memoryview


def _immutable(data: Buffer) -> bytes | memoryview:
    if isinstance(data, bytes):
        return data
    view = memoryview(data)
    return view if isinstance(view.obj, bytes) and view.readonly else bytes(view)


class HashWorker:
    """One thread hashing queued pieces in order; started on first use."""

    def __init__(self, limit: int = HASH_QUEUE_BYTES) -> None:
        self._limit = limit
        self._cond = threading.Condition()
        self._jobs: deque[tuple[LaggingHash, bytes | memoryview]] = deque()
        self._queued = 0  # bytes in _jobs and the piece being hashed
        self._thread: threading.Thread | None = None
        self._closed = False

    def new_hash(self, base: Any = None) -> LaggingHash:
        """A hash whose updates run here, continuing ``base`` (a hashlib object with
        nothing pending) or starting a new SHA-256."""
        return LaggingHash(self, hashlib.sha256() if base is None else base)

    def _submit(self, target: LaggingHash, data: Buffer) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the hash worker is closed")
            if target.pending == 0 and len(data) < INLINE_BELOW:
                target.digest_state.update(data)
                return
            piece = _immutable(data)
            while self._queued and self._queued + len(piece) > self._limit:
                self._cond.wait()
                if self._closed:
                    raise RuntimeError("the hash worker is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamsend-hash", daemon=True
                )
                self._thread.start()
            self._jobs.append((target, piece))
            self._queued += len(piece)
            target.pending += 1
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                target, piece = self._jobs.popleft()
            try:
                if target.error is None:
                    target.digest_state.update(piece)  # releases the GIL
            except BaseException as exc:  # handed to the hash's owner
                target.error = exc
            with self._cond:
                self._queued -= len(piece)
                target.pending -= 1
                self._cond.notify_all()

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
            for target, piece in self._jobs:
                target.pending -= 1
                target.error = target.error or RuntimeError("the hash worker was closed")
                self._queued -= len(piece)
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

    def hexdigest(self) -> str:
        self._worker._wait(self)
        if self.error is not None:
            raise self.error
        return str(self.digest_state.hexdigest())
