"""The downloader and partitions: safe committed offsets, transfers rebuilt from records
on several partitions, pack records, compressed records. In-memory transport; the same
behaviours run on the real broker in tests/e2e/test_e2e_parallel.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

from test_download_service import MTIME, TOPIC, run, tid, whole

from streamsend.transport.memory import MemoryBroker
from streamsend.wire.codecs import Codec
from streamsend.wire.protocol import Chunk, End, Message, Pack, encode


def put(broker: MemoryBroker, message: Message, partition: int, codec: str = "none") -> int:
    key, headers, value = encode(message, Codec(codec))
    return broker.append(TOPIC, key, headers, value, partition).offset


def committed(broker: MemoryBroker, partition: int) -> int | None:
    found = [o for (_, t, p), o in broker.committed.items() if (t, p) == (TOPIC, partition)]
    return found[0] if found else None


def test_commit_never_passes_the_first_record_of_an_unfinished_transfer(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    big = bytes(range(256)) * 8
    sha = hashlib.sha256(big).hexdigest()
    first = put(broker, Chunk(tid(1), "up", "big.bin", 0, 0, len(big), big[:1024]), 0)
    for message in whole(tid(2), "small.txt", b"small"):
        put(broker, message, 0)
    run(tmp_path / "out", broker)
    assert (tmp_path / "out" / "up" / "small.txt").read_bytes() == b"small"
    # small.txt is delivered, but big.bin's first record must be read again by whoever
    # reads this partition next: the committed offset stays on it.
    assert committed(broker, 0) == first

    put(broker, Chunk(tid(1), "up", "big.bin", 1, 1024, len(big), big[1024:]), 0)
    last = put(broker, End(tid(1), "up", "big.bin", len(big), 2, sha, MTIME, 0o644), 0)
    run(tmp_path / "out", broker)
    assert (tmp_path / "out" / "up" / "big.bin").read_bytes() == big
    assert committed(broker, 0) == last + 1


def test_a_new_reader_of_the_partition_rebuilds_the_unfinished_transfer(tmp_path: Path) -> None:
    """What a group member that takes over a partition sees: it starts at the safe
    offset, so it meets the transfer's first chunk even though another member read it."""
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    data = b"x" * 3000
    sha = hashlib.sha256(data).hexdigest()
    put(broker, Chunk(tid(1), "up", "f.bin", 0, 0, len(data), data[:1000]), 0)
    run(tmp_path / "a", broker, group_id="shared")
    put(broker, Chunk(tid(1), "up", "f.bin", 1, 1000, len(data), data[1000:]), 0)
    put(broker, End(tid(1), "up", "f.bin", len(data), 2, sha, MTIME, 0o644), 0)
    run(tmp_path / "b", broker, group_id="shared")  # another output.dir, same group
    assert (tmp_path / "b" / "up" / "f.bin").read_bytes() == data


def test_after_a_rebalance_the_next_reader_skips_what_was_delivered(tmp_path: Path) -> None:
    """Without a crash, each file is delivered once in a group: files delivered from
    records after the safe offset are named in the committed metadata, and the member
    that reads the partition next skips them."""
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    data = b"y" * 3000
    sha = hashlib.sha256(data).hexdigest()
    put(broker, Chunk(tid(1), "up", "slow.bin", 0, 0, len(data), data[:1000]), 0)
    for message in whole(tid(2), "quick.txt", b"quick"):
        put(broker, message, 0)
    a = run(tmp_path / "a", broker, group_id="shared")
    assert a.stats.delivered == 1
    assert (tmp_path / "a" / "up" / "quick.txt").exists()
    put(broker, Chunk(tid(1), "up", "slow.bin", 1, 1000, len(data), data[1000:]), 0)
    put(broker, End(tid(1), "up", "slow.bin", len(data), 2, sha, MTIME, 0o644), 0)
    b = run(tmp_path / "b", broker, group_id="shared")
    assert (tmp_path / "b" / "up" / "slow.bin").read_bytes() == data
    assert not (tmp_path / "b" / "up" / "quick.txt").exists()
    assert b.stats.delivered == 1


def test_a_transfer_spread_over_partitions_is_rebuilt(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.create(TOPIC, 4)
    data = bytes(range(251)) * 40
    sha = hashlib.sha256(data).hexdigest()
    pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    # Chunks round-robin over the partitions, the end record first on its own partition:
    # the downloader must not depend on any order between partitions.
    put(broker, End(tid(7), "up", "s.bin", len(data), len(pieces), sha, MTIME, 0o600, True), 2)
    for i, piece in enumerate(pieces):
        chunk = Chunk(tid(7), "up", "s.bin", i, i * 1000, len(data), piece, spread=True)
        put(broker, chunk, i % 4)
    d = run(tmp_path / "out", broker)
    assert (tmp_path / "out" / "up" / "s.bin").read_bytes() == data
    assert d.stats.delivered == 1
    assert all(committed(broker, p) == len(broker.topics[TOPIC].partitions[p]) for p in range(4))


def _packed(n: int, path: str, data: bytes, sha: str | None = None) -> tuple[End, bytes]:
    digest = sha or hashlib.sha256(data).hexdigest()
    return End(tid(n), "up", path, len(data), 1 if data else 0, digest, MTIME, 0o644), data


def test_each_file_of_a_pack_is_verified_and_delivered_on_its_own(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    files = (
        _packed(1, "a/one.txt", b"one"),
        _packed(2, "a/b/two.txt", b"two" * 100),
        _packed(3, "empty", b""),
        _packed(4, "bad.txt", b"forged", sha="0" * 64),
    )
    put(broker, Pack("up", files), 0, codec="zstd")
    d = run(tmp_path / "out", broker)
    out = tmp_path / "out" / "up"
    assert (out / "a" / "one.txt").read_bytes() == b"one"
    assert (out / "a" / "b" / "two.txt").read_bytes() == b"two" * 100
    assert (out / "empty").read_bytes() == b""
    assert not (out / "bad.txt").exists()
    assert (d.stats.delivered, d.stats.rejected) == (3, 1)


def test_replayed_pack_delivers_nothing_twice(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    pack = Pack("up", (_packed(1, "one.txt", b"one"), _packed(2, "two.txt", b"two")))
    put(broker, pack, 0)
    put(broker, pack, 0)  # a producer retry, or a replay after a crash
    d = run(tmp_path / "out", broker)
    assert d.stats.delivered == 2
    assert d.stats.duplicates == 2


def test_compressed_chunks_of_every_codec_are_rebuilt(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    text = b"".join(b"line %d of a log file\n" % i for i in range(3000))
    for n, codec in enumerate(("zstd", "lz4", "gzip", "snappy")):
        for message in whole(tid(10 + n), f"{codec}.log", text):
            put(broker, message, 0, codec=codec)
    run(tmp_path / "out", broker)
    for codec in ("zstd", "lz4", "gzip", "snappy"):
        assert (tmp_path / "out" / "up" / f"{codec}.log").read_bytes() == text


def test_a_pack_larger_than_the_transfer_cap_is_delivered_whole(tmp_path: Path) -> None:
    """Found by the benchmark: files of a pack are verified at once and wait for their
    delivery round; counted as unfinished transfers, a pack of 1,000 small files hit
    staging.max.transfers.per.uploader and the rest of the files were refused."""
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    files = tuple(_packed(n, f"f{n}.txt", b"file %d" % n) for n in range(1, 31))
    put(broker, Pack("up", files), 0)
    d = run(tmp_path / "out", broker, staging_max_transfers_per_uploader="10")
    assert (d.stats.delivered, d.stats.refused) == (30, 0)
