"""The hash worker: SHA-256 of staged bytes off the downloader's thread, in order, in
bounded memory, and never of bytes that changed after they were handed over."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsend.download.hashing import INLINE_BELOW, HashWorker, LaggingHash, StagedBytesMissing

DATA = random.Random(8).randbytes(3 * 1024 * 1024 + 123)


@pytest.fixture
def worker() -> Iterator[HashWorker]:
    w = HashWorker(limit=1024 * 1024)
    yield w
    w.close()


class SlowState:
    """A hash state whose updates wait for ``go``: what the worker has not hashed yet
    stays queued as long as the test wants."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.real = hashlib.sha256()
        self.seen: list[bytes] = []
        self.given: list[bytes | memoryview] = []

    def update(self, data: bytes | memoryview) -> None:
        self.given.append(data)
        assert self.go.wait(10)
        self.seen.append(bytes(data))
        self.real.update(data)

    def hexdigest(self) -> str:
        return self.real.hexdigest()


class Boom:
    def update(self, data: bytes | memoryview) -> None:
        raise MemoryError("no memory for this")

    def hexdigest(self) -> str:
        raise AssertionError("never reached")


def test_pieces_of_every_size_hash_like_hashlib_in_order(worker: HashWorker) -> None:
    rng = random.Random(1)
    h = worker.new_hash()
    cursor = 0
    while cursor < len(DATA):
        size = rng.choice([1, 100, INLINE_BELOW - 1, INLINE_BELOW, 300_000, 1024 * 1024])
        h.update(memoryview(DATA)[cursor : cursor + size])
        cursor += size
    assert h.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_a_hash_continues_the_state_it_was_given(worker: HashWorker) -> None:
    base = hashlib.sha256(DATA[:1000])
    h = worker.new_hash(base)
    h.update(DATA[1000:])
    assert h.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_interleaved_hashes_stay_apart(worker: HashWorker) -> None:
    other = bytes(reversed(DATA))
    a, b = worker.new_hash(), worker.new_hash()
    for i in range(0, len(DATA), 200_000):
        a.update(DATA[i : i + 200_000])
        b.update(other[i : i + 200_000])
    assert b.hexdigest() == hashlib.sha256(other).hexdigest()
    assert a.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_queued_bytes_are_bounded_and_a_caller_waits_for_room() -> None:
    worker = HashWorker(limit=4 * INLINE_BELOW)
    state = SlowState()
    h = LaggingHash(worker, state)
    piece = b"x" * INLINE_BELOW
    try:
        for _ in range(4):
            h.update(piece)  # fills the queue exactly: nothing waits yet
        assert worker.queued_bytes() == 4 * INLINE_BELOW
        fifth = threading.Thread(target=h.update, args=(piece,))
        fifth.start()
        time.sleep(0.2)
        assert fifth.is_alive(), "a piece beyond the limit was queued without waiting"
        assert worker.queued_bytes() == 4 * INLINE_BELOW
        state.go.set()
        fifth.join(10)
        assert not fifth.is_alive()
        assert h.hexdigest() == hashlib.sha256(piece * 5).hexdigest()
    finally:
        state.go.set()
        worker.close()


def test_one_piece_larger_than_the_limit_is_still_hashed() -> None:
    worker = HashWorker(limit=INLINE_BELOW)
    try:
        h = worker.new_hash()
        h.update(DATA)
        assert h.hexdigest() == hashlib.sha256(DATA).hexdigest()
    finally:
        worker.close()


def test_a_buffer_changed_after_the_update_is_hashed_as_it_was(worker: HashWorker) -> None:
    state = SlowState()
    h = LaggingHash(worker, state)
    buffer = bytearray(DATA[: 2 * INLINE_BELOW])
    h.update(buffer)
    h.update(memoryview(buffer))
    buffer[:] = b"\0" * len(buffer)  # a decoder reusing its buffer, say
    state.go.set()
    assert h.hexdigest() == hashlib.sha256(DATA[: 2 * INLINE_BELOW] * 2).hexdigest()


def test_bytes_are_not_copied(worker: HashWorker) -> None:
    state = SlowState()
    h = LaggingHash(worker, state)
    data = DATA[: 2 * INLINE_BELOW]
    h.update(memoryview(data)[: INLINE_BELOW + 1])
    h.update(data)
    state.go.set()
    h.hexdigest()
    first, second = state.given
    assert isinstance(first, memoryview) and first.obj is data
    assert second is data


def test_small_pieces_wait_behind_queued_ones(worker: HashWorker) -> None:
    state = SlowState()
    h = LaggingHash(worker, state)
    h.update(b"a" * INLINE_BELOW)  # queued
    h.update(b"b")  # small, but must not overtake the queued piece
    state.go.set()
    h.hexdigest()
    assert state.seen == [b"a" * INLINE_BELOW, b"b"]


def test_an_error_of_the_worker_is_raised_by_hexdigest(worker: HashWorker) -> None:
    h = LaggingHash(worker, Boom())
    h.update(b"x" * INLINE_BELOW)
    with pytest.raises(MemoryError):
        h.hexdigest()
    fine = worker.new_hash()
    fine.update(DATA)
    assert fine.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_close_stops_the_thread_and_refuses_more() -> None:
    worker = HashWorker()
    h = worker.new_hash()
    h.update(DATA)
    thread = worker._thread
    assert thread is not None
    worker.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        h.update(b"more")


def test_close_drops_what_is_queued() -> None:
    worker = HashWorker()
    state = SlowState()
    h = LaggingHash(worker, state)
    h.update(b"y" * INLINE_BELOW)
    h.update(b"z" * INLINE_BELOW)
    closing = threading.Thread(target=worker.close)
    closing.start()
    time.sleep(0.1)
    state.go.set()  # the piece being hashed finishes; the other is dropped
    closing.join(10)
    assert not closing.is_alive()
    with pytest.raises(RuntimeError):
        h.hexdigest()


# -- bytes read back from a staged file ------------------------------------------------


@pytest.fixture
def staged_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "staged", os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, DATA, 0)
    yield fd
    os.close(fd)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_staged_bytes_are_read_back_by_the_worker(worker: HashWorker, staged_fd: int) -> None:
    h = worker.new_hash()
    h.update(DATA[:1000])
    h.update_from(staged_fd, 1000, len(DATA) - 1000 - 5)
    h.update(DATA[-5:])
    assert h.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_a_read_back_survives_the_caller_closing_its_descriptor(
    worker: HashWorker, tmp_path: Path
) -> None:
    state = SlowState()
    h = LaggingHash(worker, state)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, DATA, 0)
    h.update_from(fd, 0, len(DATA))
    os.close(fd)  # the staging area's LRU may close it: the worker has its own
    state.go.set()
    assert h.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_a_staged_file_shorter_than_recorded_is_reported(
    worker: HashWorker, staged_fd: int
) -> None:
    h = worker.new_hash()
    h.update_from(staged_fd, 0, len(DATA) + 1)
    with pytest.raises(StagedBytesMissing):
        h.hexdigest()


def test_read_backs_hold_at_most_four_descriptors(staged_fd: int) -> None:
    worker = HashWorker(limit=4 * INLINE_BELOW)
    state = SlowState()
    h = LaggingHash(worker, state)
    before = open_fds()
    try:
        for _ in range(4):
            h.update_from(staged_fd, 0, 10)
        assert open_fds() == before + 4
        fifth = threading.Thread(target=h.update_from, args=(staged_fd, 0, 10))
        fifth.start()
        time.sleep(0.2)
        assert fifth.is_alive()
        state.go.set()
        fifth.join(10)
        h.hexdigest()
        assert open_fds() == before
    finally:
        state.go.set()
        worker.close()


def test_close_closes_the_descriptors_of_dropped_read_backs(staged_fd: int) -> None:
    worker = HashWorker()
    state = SlowState()
    h = LaggingHash(worker, state)
    before = open_fds()
    h.update(b"a" * INLINE_BELOW)  # being hashed (blocked) when close() comes
    h.update_from(staged_fd, 0, 10)
    h.update_from(staged_fd, 10, 10)
    assert open_fds() == before + 2
    closing = threading.Thread(target=worker.close)
    closing.start()
    time.sleep(0.1)
    state.go.set()
    closing.join(10)
    assert open_fds() == before
