"""The downloader's ledger as pure text: entries, fold, compact."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsend.download import ledger
from streamsend.download.reassembly import RangeSet, Transfer
from streamsend.wire.protocol import End

T1 = "11111111111111111111111111111111"
T2 = "22222222222222222222222222222222"
SHA = "ab" * 32


def end_for(transfer: str, size: int = 100, path: str = "a/b") -> End:
    return End(transfer, "up", path, size, 3, SHA, 1_600_000_000_123_456_789, 0o640)


def transfer(
    t: str = T1,
    ranges: list[tuple[int, int]] | None = None,
    size: int = 100,
    end: bool = False,
    path: str = "a/b",
) -> Transfer:
    x = Transfer(t, "up", path, size, RangeSet(ranges or []))
    if end:
        x.end = end_for(t, size, path)
    return x


def described(t: Transfer) -> tuple[object, ...]:
    return (t.transfer, t.uploader, t.path, t.declared_size, t.received.as_list(), t.end)


def snapshot(state: ledger.LedgerState) -> dict[str, object]:
    return {
        "staged": {k: described(t) for k, t in state.staged.items()},
        "delivering": {k: described(t) for k, t in state.delivering.items()},
        "done": dict(state.done),
    }


def fold_ok(lines: list[str]) -> ledger.LedgerState:
    state, bad = ledger.fold(lines)
    assert bad == 0
    return state


# -- each kind of entry --------------------------------------------------------------------


def test_empty_ledger() -> None:
    assert snapshot(fold_ok([])) == {"staged": {}, "delivering": {}, "done": {}}


def test_stage_entry_folds_to_a_staged_transfer() -> None:
    state = fold_ok([ledger.stage_entry(transfer(ranges=[(0, 10), (20, 30)]))])
    assert list(state.staged) == [T1]
    t = state.staged[T1]
    assert described(t) == (T1, "up", "a/b", 100, [(0, 10), (20, 30)], None)
    assert t.dirty is False  # it is what the ledger says: nothing to record again
    assert t.hashed_upto == 0  # hashed again from the staged bytes
    assert state.delivering == {} and state.done == {}


def test_stage_entry_keeps_the_end_record() -> None:
    state = fold_ok([ledger.stage_entry(transfer(ranges=[(0, 40)], end=True))])
    assert state.staged[T1].end == end_for(T1)


def test_deliver_entry_folds_to_delivering_and_done() -> None:
    state = fold_ok([ledger.deliver_entry(transfer(ranges=[(0, 100)], end=True), 12.5)])
    assert list(state.delivering) == [T1]
    t = state.delivering[T1]
    assert t.end == end_for(T1)
    assert t.declared_size == 100
    assert state.done == {T1: 12.5}
    assert state.staged == {}


def test_done_entry() -> None:
    state = fold_ok([ledger.done_entry(T1, 3.0)])
    assert state.done == {T1: 3.0}
    assert state.staged == {} and state.delivering == {}


def test_forget_entry_forgets_everything_of_the_transfer() -> None:
    for first in (
        ledger.stage_entry(transfer()),
        ledger.done_entry(T1, 1.0),
        ledger.deliver_entry(transfer(end=True), 1.0),
    ):
        state = fold_ok([first, ledger.done_entry(T2, 2.0), ledger.forget_entry(T1)])
        assert snapshot(state) == {"staged": {}, "delivering": {}, "done": {T2: 2.0}}


def test_entries_are_single_json_lines() -> None:
    t = transfer(ranges=[(0, 10)], end=True, path="a/new\nline \u2028 é")
    for line in (
        ledger.stage_entry(t),
        ledger.deliver_entry(t, 1.0),
        ledger.done_entry(T1, 1.0),
        ledger.forget_entry(T1),
    ):
        assert line.splitlines() == [line]
        assert isinstance(json.loads(line), dict)
    assert fold_ok(ledger.stage_entry(t).splitlines()).staged[T1].path == t.path


# -- the last entry wins -----------------------------------------------------------------


def test_last_stage_entry_wins() -> None:
    state = fold_ok(
        [
            ledger.stage_entry(transfer(ranges=[(0, 10)])),
            ledger.stage_entry(transfer(T2, ranges=[(5, 6)])),
            ledger.stage_entry(transfer(ranges=[(0, 10), (50, 60)], end=True)),
        ]
    )
    assert state.staged[T1].received.as_list() == [(0, 10), (50, 60)]
    assert state.staged[T1].end == end_for(T1)
    assert state.staged[T2].received.as_list() == [(5, 6)]


def test_done_after_stage_is_done_only() -> None:
    state = fold_ok([ledger.stage_entry(transfer()), ledger.done_entry(T1, 4.0)])
    assert snapshot(state) == {"staged": {}, "delivering": {}, "done": {T1: 4.0}}


def test_done_after_deliver_is_done_only_with_its_time() -> None:
    state = fold_ok([ledger.deliver_entry(transfer(end=True), 1.0), ledger.done_entry(T1, 9.0)])
    assert snapshot(state) == {"staged": {}, "delivering": {}, "done": {T1: 9.0}}


def test_deliver_after_stage_is_delivering_only() -> None:
    state = fold_ok(
        [
            ledger.stage_entry(transfer(ranges=[(0, 100)])),
            ledger.deliver_entry(transfer(end=True), 2.0),
        ]
    )
    assert list(state.delivering) == [T1]
    assert state.staged == {}


@pytest.mark.parametrize("earlier", ["done", "deliver"])
def test_stage_after_done_or_deliver_is_staged_only(earlier: str) -> None:
    first = (
        ledger.done_entry(T1, 1.0)
        if earlier == "done"
        else ledger.deliver_entry(transfer(end=True), 1.0)
    )
    state = fold_ok([first, ledger.stage_entry(transfer(ranges=[(0, 10)]))])
    assert list(state.staged) == [T1]
    assert state.done == {}


# -- damage ---------------------------------------------------------------------------------


def test_torn_last_line_is_skipped_and_counted() -> None:
    whole = ledger.stage_entry(transfer(T2, ranges=[(0, 10)], end=True))
    for cut in (1, len(whole) // 2, len(whole) - 1):
        lines = [ledger.stage_entry(transfer(ranges=[(0, 5)])), whole[:cut]]
        state, bad = ledger.fold(lines)
        assert bad == 1
        assert list(state.staged) == [T1]


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "{}",
        "[1, 2]",
        "null",
        "42",
        '"a string"',
        '{"op": "stage"}',
        '{"t": "x"}',
        '{"op": "bogus", "t": "x"}',
        '{"op": "done", "t": "x"}',
        '{"op": "done", "t": "x", "at": "soon"}',
        '{"op": "stage", "t": "x", "u": "up", "p": "a", "size": 5, "ranges": [[1]]}',
        '{"op": "stage", "t": "x", "u": "up", "p": "a", "size": 5, "ranges": 7}',
        '{"op": "stage", "t": "x", "u": "up", "p": "a", "size": 5, "end": {"size": 5}}',
        "\x00\x01\x02",
        "\ufffd\ufffd{",
    ],
)
def test_garbage_line_is_skipped_and_counted(garbage: str) -> None:
    good = [ledger.done_entry(T1, 1.0), ledger.stage_entry(transfer(T2, ranges=[(0, 3)]))]
    state, bad = ledger.fold([good[0], garbage, "", "   ", good[1]])
    assert bad == 1
    assert state.done == {T1: 1.0}
    assert list(state.staged) == [T2]


@pytest.mark.parametrize(
    "garbage",
    [
        '{"op": "stage", "t": "x", "u": "up", "p": "a", "end": []}',
        '{"op": "stage", "t": "x", "u": "up", "p": "a", "size": 1e999}',
    ],
)
def test_wrongly_typed_line_is_skipped_and_counted(garbage: str) -> None:
    state, bad = ledger.fold([ledger.done_entry(T1, 1.0), garbage])
    assert bad == 1
    assert state.done == {T1: 1.0}


# -- round trips and compaction -----------------------------------------------------------


def test_end_record_survives_a_stage_entry_round_trip() -> None:
    t = transfer(ranges=[(10, 20)], size=100, end=True)
    t.end = End(T1, "up", "a/b", 100, 7, SHA, -5, 0o4755)  # negative mtime, setuid bit
    back = fold_ok([ledger.stage_entry(t)]).staged[T1]
    assert back.end == t.end
    assert back.received.as_list() == [(10, 20)]
    # ... and through a second round (compaction rewrites it).
    again = fold_ok(ledger.compact(fold_ok([ledger.stage_entry(back)])))
    assert again.staged[T1].end == t.end


def test_compact_writes_one_line_per_transfer() -> None:
    lines = [
        ledger.stage_entry(transfer(ranges=[(0, 10)])),
        ledger.stage_entry(transfer(ranges=[(0, 20)])),
        ledger.done_entry(T2, 1.0),
        ledger.done_entry(T2, 2.0),
        ledger.deliver_entry(transfer("3" * 32, end=True), 3.0),
    ]
    state = fold_ok(lines)
    compacted = ledger.compact(state)
    assert len(compacted) == 3
    assert snapshot(fold_ok(compacted)) == snapshot(state)
    assert ledger.compact(fold_ok(compacted)) == compacted


_ids = st.sampled_from(["a" * 32, "b" * 32, "c" * 32])
_ranges = st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=4)
_times = st.floats(min_value=0, max_value=2e9, allow_nan=False)


@st.composite
def _entry(draw: st.DrawFn) -> str:
    t = draw(_ids)
    op = draw(st.sampled_from(["stage", "deliver", "done", "forget"]))
    if op == "stage":
        x = transfer(t, ranges=draw(_ranges), end=draw(st.booleans()))
        return ledger.stage_entry(x)
    if op == "deliver":
        return ledger.deliver_entry(transfer(t, ranges=[(0, 100)], end=True), draw(_times))
    if op == "done":
        return ledger.done_entry(t, draw(_times))
    return ledger.forget_entry(t)


@settings(max_examples=300, deadline=None)
@given(st.lists(_entry(), max_size=30))
def test_property_compact_folds_back_to_the_same_state(lines: list[str]) -> None:
    state = fold_ok(lines)
    compacted = ledger.compact(state)
    assert snapshot(fold_ok(compacted)) == snapshot(state)
    assert len(compacted) <= len(lines)
    assert ledger.compact(fold_ok(compacted)) == compacted
