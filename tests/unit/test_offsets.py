"""The downloader's offset book: safe offsets and the delivered-transfer metadata (pure)."""

from __future__ import annotations

from streamsend.download.offsets import DELIVERED_PREFIX, MAX_IDS, METADATA_LIMIT, OffsetBook

P0, P1 = ("files", 0), ("files", 1)


def tid(n: int) -> str:
    return f"{n:032x}"


def test_the_offset_stays_on_the_first_record_of_an_unfinished_transfer() -> None:
    book = OffsetBook()
    book.met(tid(1), P0, 10)
    for offset in range(10, 20):
        book.consumed(P0, offset)
    book.consumed(P1, 4)
    assert book.to_commit() == ({P0: 10, P1: 5}, {P0: "", P1: ""})


def test_delivered_transfers_after_the_safe_offset_are_named() -> None:
    book = OffsetBook()
    book.met(tid(1), P0, 10)  # unfinished
    book.met(tid(2), P0, 11)
    book.met(tid(2), P0, 12)
    book.delivered(tid(2))
    book.consumed(P0, 12)
    offsets, metadata = book.to_commit()
    assert offsets == {P0: 10}
    assert metadata == {P0: DELIVERED_PREFIX + tid(2)}
    book.committed(offsets, metadata)
    assert book.to_commit() == ({}, {})  # nothing changed: nothing to commit

    book.met(tid(1), P0, 13)
    book.delivered(tid(1))
    book.consumed(P0, 13)
    # Both wholly before the new offset: nobody will read them again.
    assert book.to_commit() == ({P0: 14}, {P0: ""})


def test_a_transfer_that_ends_without_delivery_holds_nothing_back() -> None:
    book = OffsetBook()
    book.met(tid(1), P0, 3)
    book.consumed(P0, 8)
    book.unfinished(tid(1))
    assert book.to_commit() == ({P0: 9}, {P0: ""})


def test_metadata_stays_under_the_brokers_limit_keeping_the_newest() -> None:
    book = OffsetBook()
    book.met(tid(0), P0, 0)  # holds the offset at 0
    for n in range(1, 500):
        book.met(tid(n), P0, n)
        book.delivered(tid(n))
        book.consumed(P0, n)
    _, metadata = book.to_commit()
    ids = metadata[P0][len(DELIVERED_PREFIX) :].split(",")
    assert len(ids) == MAX_IDS
    assert len(metadata[P0]) <= METADATA_LIMIT
    assert ids[0] == tid(499)


def test_the_next_reader_skips_what_the_last_one_delivered_and_passes_it_on() -> None:
    book = OffsetBook()
    book.assigned({P0: DELIVERED_PREFIX + tid(2), P1: "something else"})
    book.consumed(P0, 9)
    # Not met yet: still named (its records lie ahead).
    assert book.to_commit()[1] == {P0: DELIVERED_PREFIX + tid(2)}
    assert book.skip(tid(2), P0, 11, done=False)
    assert not book.skip(tid(3), P0, 12, done=False)
    assert not book.skip(tid(2), P1, 11, done=False)  # named for P0 only
    book.consumed(P0, 11)
    assert book.to_commit()[1] == {P0: ""}  # at 12 now: tid(2) is behind


def test_done_transfers_met_again_are_named_too() -> None:
    book = OffsetBook()
    book.met(tid(1), P0, 5)
    assert book.skip(tid(9), P0, 6, done=True)
    book.consumed(P0, 6)
    assert book.to_commit()[1] == {P0: DELIVERED_PREFIX + tid(9)}


def test_revoked_partitions_are_forgotten() -> None:
    book = OffsetBook()
    book.met(tid(1), P0, 5)
    book.consumed(P0, 6)
    book.consumed(P1, 6)
    book.revoked([P0])
    assert book.to_commit() == ({P1: 7}, {P1: ""})
