"""Fault 5: redelivered chunks, a file sent twice, and one file's chunks arriving out of
order across partitions all end in one correct file."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from confluent_kafka import Producer

from harness import Pipeline, create_topic, explain
from streamsend.wire.protocol import Chunk, End, Message, encode, new_transfer_id

pytestmark = pytest.mark.kafka

CHUNK = 50_000


def transfer(uploader: str, path: str, data: bytes, mtime_ns: int) -> list[Message]:
    tid = new_transfer_id()
    chunks: list[Message] = [
        Chunk(tid, uploader, path, i, off, len(data), data[off : off + CHUNK])
        for i, off in enumerate(range(0, len(data), CHUNK))
    ]
    sha = hashlib.sha256(data).hexdigest()
    end = End(tid, uploader, path, len(data), len(chunks), sha, mtime_ns, 0o644)
    return [*chunks, end]


def test_duplicates_reordering_and_resends_give_one_correct_file(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=3)
    rng = random.Random(11)
    data = rng.randbytes(1_000_003)
    mtime = 1_700_000_000_123_456_789
    first = transfer("dup", "same/file.bin", data, mtime)
    second = transfer("dup", "same/file.bin", data, mtime)  # the same file sent twice
    records = first + rng.sample(first[:-1], 8) + second  # redelivered chunks
    rng.shuffle(records)  # any order, End records included
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    for i, record in enumerate(records):
        key, headers, value = encode(record)
        # Spread over partitions explicitly: order across partitions is not kept.
        producer.produce(pipeline.topic, value, key, partition=i % 3, headers=headers)
    assert producer.flush(30) == 0

    out = tmp_path / "out"
    result = pipeline.download(out)
    assert result.returncode == 0, explain(result)
    target = out / "dup" / "same" / "file.bin"
    assert target.read_bytes() == data
    assert target.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    assert not list((out / ".streamsend" / "staging").iterdir())
