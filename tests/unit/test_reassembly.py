"""RangeSet and Transfer: which bytes of a transfer have arrived."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsend.download.reassembly import RangeSet, Transfer
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


# -- Transfer ----------------------------------------------------------------


def split(data: bytes, size: int) -> list[Chunk]:
    return [
        Chunk(TRANSFER, "up", "a/b", i, off, len(data), data[off : off + size])
        for i, off in enumerate(range(0, len(data), size))
    ]


def end_of(data: bytes, chunks: int, uploader: str = "up", path: str = "a/b") -> End:
    return End(TRANSFER, uploader, path, len(data), chunks, SHA, 0, 0o644)


def progress(size: int) -> Transfer:
    return Transfer(TRANSFER, "up", "a/b", size)


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


# -- RangeSet.missing ----------------------------------------------------------------


def test_missing_from_an_empty_set_is_the_whole_query() -> None:
    assert RangeSet().missing(3, 9) == [(3, 9)]


def test_missing_of_an_empty_or_inverted_query_is_nothing() -> None:
    r = RangeSet([(0, 10)])
    assert r.missing(5, 5) == []
    assert r.missing(20, 20) == []
    assert r.missing(9, 3) == []


def test_missing_lists_the_gaps_in_order() -> None:
    r = RangeSet([(10, 20), (30, 40), (50, 60)])
    assert r.missing(0, 70) == [(0, 10), (20, 30), (40, 50), (60, 70)]
    assert r.missing(15, 55) == [(20, 30), (40, 50)]
    assert r.missing(10, 60) == [(20, 30), (40, 50)]
    assert r.missing(12, 18) == []
    assert r.missing(30, 40) == []
    assert r.missing(25, 28) == [(25, 28)]
    assert r.missing(60, 65) == [(60, 65)]
    assert r.missing(0, 10) == [(0, 10)]
    assert r.missing(19, 31) == [(20, 30)]


def test_missing_changes_nothing() -> None:
    r = RangeSet([(10, 20)])
    r.missing(0, 100)
    assert r.as_list() == [(10, 20)]


@settings(max_examples=300)
@given(_ranges, st.integers(0, 65), st.integers(0, 65))
def test_property_missing_matches_set_of_bytes(
    ranges: list[tuple[int, int]], qs: int, qe: int
) -> None:
    r = RangeSet(ranges)
    model = {b for s, e in ranges for b in range(s, e)}
    gaps = r.missing(qs, qe)
    # Sorted, disjoint, non-adjacent (each gap is maximal), non-empty, inside the query.
    assert all(qs <= s < e <= qe for s, e in gaps)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(gaps))
    assert [b for s, e in gaps for b in range(s, e)] == [b for b in range(qs, qe) if b not in model]
    assert (gaps == []) == r.covers(qs, qe)


# -- first writer wins (defect 1) ----------------------------------------------------


def test_forged_overlapping_chunk_contributes_only_its_new_bytes() -> None:
    """Defect 1 at the pure level: genuine [0,10), forged [5,11), genuine [10,20), genuine
    end. Only new bytes are taken, so the hash covers exactly what would be on disk, which
    holds the forged byte 10 and therefore never matches the genuine SHA-256."""
    genuine = bytes(range(65, 85))
    g0 = Chunk(TRANSFER, "up", "a/b", 0, 0, 20, genuine[:10])
    forged = Chunk(TRANSFER, "up", "a/b", 1, 5, 20, b"XXXXXX")
    g1 = Chunk(TRANSFER, "up", "a/b", 1, 10, 20, genuine[10:])
    end = End(TRANSFER, "up", "a/b", 20, 2, hashlib.sha256(genuine).hexdigest(), 0, 0o644)
    p = progress(20)
    disk = bytearray(20)
    taken = []
    for chunk in (g0, forged, g1):
        pieces = p.new_pieces(chunk)
        taken.append(pieces)
        for start, stop in pieces:  # what the staging area writes
            disk[start:stop] = chunk.data[start - chunk.offset : stop - chunk.offset]
        assert p.accept_chunk(chunk) is True
    assert taken == [[(0, 10)], [(10, 11)], [(11, 20)]]
    p.accept_end(end)
    assert p.complete()
    assert p.hashed_upto == 20
    assert bytes(disk) == genuine[:10] + b"X" + genuine[11:]
    assert p.hasher.hexdigest() == hashlib.sha256(disk).hexdigest()
    assert p.hasher.hexdigest() != end.sha256


def test_new_pieces_changes_nothing() -> None:
    p = progress(len(DATA))
    chunk = split(DATA, 100)[1]
    assert p.new_pieces(chunk) == [(100, 200)]
    assert p.new_pieces(chunk) == [(100, 200)]
    assert p.received.as_list() == []
    assert p.hashed_upto == 0


def test_hash_covers_only_contiguous_bytes_from_offset_zero() -> None:
    chunks = split(DATA, 100)
    p = progress(len(DATA))
    p.accept_chunk(chunks[1])
    assert p.hashed_upto == 0  # a gap before it: hashed later, from the staged file
    p.accept_chunk(chunks[0])
    assert p.hashed_upto == 100
    for chunk in chunks[2:]:  # [100, 200) arrived out of order: never skipped over
        p.accept_chunk(chunk)
    assert p.hashed_upto == 100
    assert p.hasher.hexdigest() == hashlib.sha256(DATA[:100]).hexdigest()


def test_unhashed_names_received_bytes_the_hash_skipped() -> None:
    chunks = split(DATA, 100)
    p = progress(len(DATA))
    assert p.unhashed() == (0, 0)
    p.accept_chunk(chunks[1])
    p.accept_chunk(chunks[3])
    assert p.unhashed() == (0, 0)  # nothing continues the (empty) prefix yet
    p.accept_chunk(chunks[0])
    assert p.unhashed() == (100, 200)  # chunk 1 arrived before the gap closed
    p.accept_chunk(chunks[2])
    assert p.unhashed() == (100, 400)


def test_range_end_from_a_position() -> None:
    r = RangeSet([(0, 10), (20, 30)])
    ends = [r.end_from(x) for x in (0, 5, 10, 15, 20, 29, 30, 99)]
    assert ends == [10, 10, 10, 15, 30, 30, 30, 99]
    assert RangeSet().end_from(7) == 7


def test_hash_of_an_in_order_transfer_is_complete_in_memory() -> None:
    p = progress(len(DATA))
    for chunk in split(DATA, 100):
        p.accept_chunk(chunk)
    assert p.hashed_upto == len(DATA)
    assert p.hasher.hexdigest() == hashlib.sha256(DATA).hexdigest()


# -- a second end record ---------------------------------------------------------------


def test_identical_second_end_record_is_accepted() -> None:
    p = progress(len(DATA))
    end = end_of(DATA, 11)
    p.accept_end(end)
    p.dirty = False
    p.accept_end(End(*(getattr(end, f) for f in end.__dataclass_fields__)))  # equal copy
    assert p.end == end
    assert p.dirty is False  # nothing new to record


@pytest.mark.parametrize(
    "change",
    [{"sha256": "f" * 64}, {"chunks": 12}, {"mtime_ns": 1}, {"mode": 0o600}],
)
def test_different_second_end_record_is_a_protocol_error(change: dict[str, object]) -> None:
    p = progress(len(DATA))
    end = end_of(DATA, 11)
    p.accept_end(end)
    with pytest.raises(ProtocolError, match="second end record"):
        p.accept_end(dataclasses.replace(end, **change))
    assert p.end == end
