"""The uploader's use of partitions, packs and codecs (in-memory transport)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_upload_support import (
    TOPIC,
    RecordingBroker,
    complete,
    payload,
    run_once,
    state_records,
    transfers,
    uploader_settings,
    write,
)

from streamsend.transport.memory import MemoryBroker
from streamsend.wire.protocol import Chunk, Pack, decode, file_partition

PACKING = {"pack.file.max.bytes": "4096", "binary.chunk.size.bytes": "65536"}


def test_small_files_travel_packed_and_each_is_recorded(tmp_path: Path) -> None:
    source = tmp_path / "in"
    files = {f"d{i % 4}/f{i}.txt": payload(50 + i * 30, seed=i) for i in range(60)}
    for name, data in files.items():
        write(source / name, data)
    write(source / "large.bin", payload(10_000, seed=99))  # above the limit: chunked
    broker = RecordingBroker()
    broker.create(TOPIC, 4)
    stats = run_once(uploader_settings(source, **PACKING, **{"after.upload": "delete"}), broker)
    assert stats.sent == 61
    records = broker.records(TOPIC)
    packs = [decode(r.headers, r.value) for r in records]
    assert sum(isinstance(p, Pack) for p in packs) <= 8  # one or two per partition
    for name, data in files.items():
        assert complete(broker, name) == [data]
        assert not (source / name).exists()  # deleted once its pack was acknowledged
    assert complete(broker, "large.bin") == [payload(10_000, seed=99)]
    assert sorted(p for p, v in state_records(broker) if v) == sorted([*files, "large.bin"])
    # A pack holds only files of its own partition: versions of a file stay in order.
    for record in records:
        message = decode(record.headers, record.value)
        if isinstance(message, Pack):
            for end, _ in message.files:
                assert file_partition("up1", end.path, 4) == record.partition


def test_a_pack_is_never_larger_than_a_chunk(tmp_path: Path) -> None:
    source = tmp_path / "in"
    for i in range(40):
        write(source / f"f{i}.bin", payload(3000, seed=i))
    broker = MemoryBroker()
    broker.create(TOPIC, 1)
    run_once(uploader_settings(source, **{**PACKING, "binary.chunk.size.bytes": "16384"}), broker)
    sizes = [len(r.value or b"") for r in broker.records(TOPIC)]
    assert len(sizes) >= 40 * 3000 // 16384
    assert max(sizes) <= 16384


def test_a_small_file_changed_while_read_is_sent_once_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in"
    write(source / "a.txt", b"first version")
    real_pread = os.pread
    grown = []

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        if not grown:
            grown.append(True)
            with open(source / "a.txt", "ab") as fp:
                fp.write(b" and more")
        return data

    monkeypatch.setattr(os, "pread", pread)
    broker = MemoryBroker()
    settings = uploader_settings(source, **PACKING)
    run_once(settings, broker)
    assert complete(broker, "a.txt") == []  # nothing torn was sent
    monkeypatch.undo()
    run_once(settings, broker)
    assert complete(broker, "a.txt") == [b"first version and more"]


def test_partitioning_file_keeps_a_file_on_one_partition(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "big.bin", payload(9_500, seed=1))
    broker = MemoryBroker()
    broker.create(TOPIC, 4)
    run_once(uploader_settings(source), broker)
    (t,) = transfers(broker).values()
    assert {r.partition for r in t.records} == {file_partition("up1", "big.bin", 4)}


def test_partitioning_chunk_spreads_a_file_over_every_partition(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "big.bin", payload(9_500, seed=1))
    broker = MemoryBroker()
    broker.create(TOPIC, 4)
    run_once(uploader_settings(source, partitioning="chunk"), broker)
    (t,) = transfers(broker).values()
    assert {r.partition for r in t.records} == {0, 1, 2, 3}
    chunks = [decode(r.headers, r.value) for r in t.records]
    assert all(c.spread for c in chunks if isinstance(c, Chunk))
    assert complete(broker, "big.bin") == [payload(9_500, seed=1)]


def test_compressible_chunks_are_compressed(tmp_path: Path) -> None:
    source = tmp_path / "in"
    text = b"the same line again\n" * 500
    write(source / "log.txt", text)
    broker = MemoryBroker()
    run_once(uploader_settings(source, **{"compression.type": "zstd"}), broker)
    values = [r.value or b"" for r in broker.records(TOPIC)]
    assert sum(map(len, values)) < len(text) / 5
    assert complete(broker, "log.txt") == [text]
