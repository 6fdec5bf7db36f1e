"""Pack buffers (upload/packing.py): bounded per record and in all."""

from __future__ import annotations

from streamsend.upload.packing import Packs
from streamsend.wire.protocol import End, pack_overhead

SHA = "0" * 64


def end(n: int, size: int) -> End:
    return End(f"{n:032x}", "up", f"f{n}", size, 1, SHA, 0, 0o644)


def test_a_pack_is_produced_before_it_would_outgrow_one_record() -> None:
    one = pack_overhead(end(0, 100).path) + 100
    packs: Packs[int] = Packs(record_limit=3 * one, total_limit=100 * one)
    assert packs.add(0, end(1, 100), b"x" * 100, 1) == []
    assert packs.add(0, end(2, 100), b"x" * 100, 2) == []
    assert packs.add(0, end(3, 100), b"x" * 100, 3) == []
    ready = packs.add(0, end(4, 100), b"x" * 100, 4)  # would make four
    assert [(p, b.members) for p, b in ready] == [(0, [1, 2, 3])]
    assert [(p, b.members) for p, b in packs.drain()] == [(0, [4])]
    assert packs.drain() == []


def test_partitions_have_their_own_packs_and_a_bound_in_all() -> None:
    one = pack_overhead(end(0, 100).path) + 100
    packs: Packs[int] = Packs(record_limit=10 * one, total_limit=3 * one)
    assert packs.add(0, end(1, 100), b"x" * 100, 1) == []
    assert packs.add(1, end(2, 100), b"x" * 100, 2) == []
    assert packs.add(2, end(3, 100), b"x" * 100, 3) == []
    ready = packs.add(0, end(4, 100), b"x" * 100, 4)  # four in all: everything goes
    assert sorted((p, b.members) for p, b in ready) == [(0, [1, 4]), (1, [2]), (2, [3])]
    assert all(b.size == sum(pack_overhead(e.path) + len(d) for e, d in b.files) for _, b in ready)
    assert packs.add(3, end(5, 100), b"x" * 100, 5) == []  # the total started again


def test_a_file_fits_a_pack_only_with_its_manifest_entry() -> None:
    packs: Packs[int] = Packs(record_limit=1000, total_limit=4000)
    room = 1000 - pack_overhead("a.txt")
    assert packs.fits(room, "a.txt")
    assert not packs.fits(room + 1, "a.txt")
    assert not packs.fits(room, "a-longer-name.txt")
