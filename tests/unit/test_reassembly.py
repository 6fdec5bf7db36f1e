"""RangeSet and TransferProgress: which bytes of a transfer have arrived."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsend.download.reassembly import RangeSet, TransferProgress
from streamsend.errors import ProtocolError
from streamsend.wire.protocol import Chunk, End

TRANSFER = "0123456789abcdef0123456789abcdef"
SHA = "0" * 64

# -- RangeSet ------------------------------------------------------------------------


def test_empty_rangeset() -> None:
    r = RangeSet()
    assert r.as_list() == []
    assert len(r) == 0
    assert r.total() == 0
    assert r.covers(5, 5)
    assert not r.covers(0, 1)


def test_adjacent_ranges_merge() -> None:
    r = RangeSet()
    r.add(0, 10)
    r.add(10, 20)
    assert r.as_list() == [(0, 20)]
    r.add(30, 40)
    r.add(20, 30)
    assert r.as_list() == [(0, 40)]
    assert len(r) == 1


def test_disjoint_ranges_stay_sorted() -> None:
    r = RangeSet([(50, 60), (10, 20), (30, 40)])
    assert r.as_list() == [(10, 20), (30, 40), (50, 60)]
    assert r.total() == 30


def test_overlapping_range_swallows_several() -> None:
    r = RangeSet([(10, 20), (30, 40), (50, 60)])
    r.add(15, 55)
    assert r.as_list() == [(10, 60)]
    r.add(0, 100)
    assert r.as_list() == [(0, 100)]


def test_empty_and_inverted_ranges_are_ignored() -> None:
    r = RangeSet([(5, 5), (9, 3)])
    assert r.as_list() == []


def test_covers() -> None:
    r = RangeSet([(0, 10), (20, 30)])
    assert r.covers(0, 10)
    assert r.covers(2, 8)
    assert r.covers(20, 30)
    assert not r.covers(5, 15)
    assert not r.covers(9, 21)
    assert not r.covers(10, 20)
    assert not r.covers(25, 31)
    assert not r.covers(40, 41)


_ranges = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=25)


@settings(max_examples=300)
@given(_ranges, st.integers(0, 65), st.integers(0, 65))
def test_property_rangeset_matches_set_of_bytes(
    ranges: list[tuple[int, int]], qs: int, qe: int
) -> None:
    r = RangeSet()
    model: set[int] = set()
    for start, end in ranges:
        r.add(start, end)
        model.update(range(start, end))
        listed = r.as_list()
        # Sorted, disjoint, non-adjacent, non-empty.
        assert all(s < e for s, e in listed)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(listed))
        assert {b for s, e in listed for b in range(s, e)} == model
    assert r.total() == len(model)
    assert len(r) == len(r.as_list())
    assert r.covers(qs, qe) == all(b in model for b in range(qs, qe))


# -- TransferProgress ----------------------------------------------------------------


def split(data: bytes, size: int) -> list[Chunk]:
    return [
        Chunk(TRANSFER, "up", "a/b", i, off, len(data), data[off : off + size])
        for i, off in enumerate(range(0, len(data), size))
    ]


def end_of(data: bytes, chunks: int, uploader: str = "up", path: str = "a/b") -> End:
    return End(TRANSFER, uploader, path, len(data), chunks, SHA, 0, 0o644)


def progress(size: int) -> TransferProgress:
    return TransferProgress(TRANSFER, "up", "a/b", size)


DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.mark.parametrize("order", ["in-order", "reverse", "shuffled"])
@pytest.mark.parametrize("end_position", ["first", "middle", "last"])
def test_completes_exactly_when_end_and_full_coverage(order: str, end_position: str) -> None:
    chunks = split(DATA, 100)
    if order == "reverse":
        chunks.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(chunks)
    end = end_of(DATA, len(chunks))
    end_at = {"first": 0, "middle": len(chunks) // 2, "last": len(chunks)}[end_position]
    p = progress(len(DATA))
    for i, chunk in enumerate(chunks):
        if i == end_at:
            p.accept_end(end)
        assert not p.complete()
        assert p.accept_chunk(chunk) is True
    if end_at == len(chunks):
        assert not p.complete()
        p.accept_end(end)
    assert p.complete()
    assert p.received.as_list() == [(0, len(DATA))]


def test_all_chunks_without_end_is_not_complete() -> None:
    p = progress(len(DATA))
    for chunk in split(DATA, 300):
        p.accept_chunk(chunk)
    assert p.received.covers(0, len(DATA))
    assert not p.complete()


def test_end_with_a_gap_is_not_complete() -> None:
    chunks = split(DATA, 100)
    p = progress(len(DATA))
    p.accept_end(end_of(DATA, len(chunks)))
    for chunk in chunks[:3] + chunks[4:]:
        p.accept_chunk(chunk)
    assert not p.complete()
    p.accept_chunk(chunks[3])
    assert p.complete()


def test_duplicate_chunk_returns_false() -> None:
    chunks = split(DATA, 100)
    p = progress(len(DATA))
    assert p.accept_chunk(chunks[2]) is True
    assert p.accept_chunk(chunks[2]) is False
    assert p.received.total() == 100
    assert p.received.as_list() == [(200, 300)]


def test_chunk_inside_received_ranges_returns_false() -> None:
    p = progress(len(DATA))
    p.accept_chunk(split(DATA, 512)[0])
    inner = Chunk(TRANSFER, "up", "a/b", 9, 100, len(DATA), DATA[100:200])
    assert p.accept_chunk(inner) is False


def test_end_size_mismatch_is_a_protocol_error() -> None:
    p = progress(len(DATA))
    p.accept_chunk(split(DATA, 100)[0])
    with pytest.raises(ProtocolError):
        p.accept_end(End(TRANSFER, "up", "a/b", len(DATA) + 1, 11, SHA, 0, 0o644))
    assert p.end is None


def test_chunk_with_different_declared_size_is_a_protocol_error() -> None:
    p = progress(len(DATA))
    with pytest.raises(ProtocolError):
        p.accept_chunk(Chunk(TRANSFER, "up", "a/b", 0, 0, len(DATA) - 1, b"x"))


def test_chunk_past_end_after_end_is_a_protocol_error() -> None:
    p = progress(10)
    p.accept_end(End(TRANSFER, "up", "a/b", 10, 1, SHA, 0, 0o644))
    # Built directly (decode would refuse it) to exercise the second line of defence.
    with pytest.raises(ProtocolError):
        p.accept_chunk(Chunk(TRANSFER, "up", "a/b", 1, 8, 10, b"12345"))


def test_end_after_chunks_past_its_size_is_a_protocol_error() -> None:
    p = progress(10)
    assert p.accept_chunk(Chunk(TRANSFER, "up", "a/b", 1, 8, 10, b"12345"))
    with pytest.raises(ProtocolError):
        p.accept_end(End(TRANSFER, "up", "a/b", 10, 2, SHA, 0, 0o644))


@pytest.mark.parametrize(("uploader", "path"), [("other", "a/b"), ("up", "a/c")])
def test_switching_file_mid_transfer_is_a_protocol_error(uploader: str, path: str) -> None:
    p = progress(len(DATA))
    with pytest.raises(ProtocolError):
        p.accept_chunk(Chunk(TRANSFER, uploader, path, 0, 0, len(DATA), b"x"))
    with pytest.raises(ProtocolError):
        p.accept_end(end_of(DATA, 1, uploader, path))


def test_empty_file_completes_with_end_only() -> None:
    p = progress(0)
    assert not p.complete()
    p.accept_end(End(TRANSFER, "up", "a/b", 0, 0, SHA, 0, 0o644))
    assert p.complete()


@settings(max_examples=200)
@given(
    st.integers(1, 2000),
    st.integers(1, 300),
    st.randoms(use_true_random=False),
    st.integers(0, 5),
)
def test_property_any_arrival_order_completes(
    size: int, chunk_size: int, rnd: random.Random, duplicates: int
) -> None:
    data = bytes(size)
    chunks = split(data, chunk_size)
    arrivals = chunks + [rnd.choice(chunks) for _ in range(duplicates)]
    rnd.shuffle(arrivals)
    end = end_of(data, len(chunks))
    end_at = rnd.randrange(len(arrivals) + 1)
    p = progress(size)
    fresh = 0
    for i, chunk in enumerate(arrivals):
        if i == end_at:
            p.accept_end(end)
        assert p.complete() == (end_at <= i and fresh == len(chunks))
        fresh += p.accept_chunk(chunk)
    if end_at == len(arrivals):
        assert not p.complete()
        p.accept_end(end)
    assert p.complete()
    assert fresh == len(chunks)
