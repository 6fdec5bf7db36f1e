"""Hostile and broken records on the topic: the downloader rejects each with one clear
log line and a counter, writes nothing outside output.dir, never delivers bad data, never
allocates on the strength of a header, and keeps running."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from confluent_kafka import Producer

from harness import Pipeline, explain
from streamsend.wire.protocol import Chunk, End, Message, encode, new_transfer_id

pytestmark = pytest.mark.kafka


def produce(bootstrap: str, topic: str, records: list[Message | tuple[bytes, list, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        key, headers, value = record if isinstance(record, tuple) else encode(record)
        producer.produce(topic, value, key, headers=headers)
    assert producer.flush(30) == 0


def whole_file(uploader: str, path: str, data: bytes, sha: str | None = None) -> list[Message]:
    tid = new_transfer_id()
    digest = sha or hashlib.sha256(data).hexdigest()
    return [
        Chunk(tid, uploader, path, 0, 0, len(data), data),
        End(tid, uploader, path, len(data), 1, digest, 1_700_000_000_000_000_000, 0o644),
    ]


def disk_usage(root: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


def test_corrupted_chunk_is_rejected_never_delivered(pipeline: Pipeline, tmp_path: Path) -> None:
    good = b"the real content " * 1000
    bad = bytearray(good)
    bad[100] ^= 0xFF
    records = whole_file("edge", "report.csv", bytes(bad), sha=hashlib.sha256(good).hexdigest())
    produce(pipeline.bootstrap, pipeline.topic, [*records, *whole_file("edge", "ok.txt", b"ok")])
    out = tmp_path / "out"
    result = pipeline.download(out)
    assert result.returncode == 0, explain(result)
    assert not (out / "edge" / "report.csv").exists()
    assert (out / "edge" / "ok.txt").read_bytes() == b"ok"
    rejected = out / ".streamsend" / "rejected"
    reasons = [p.read_text() for p in rejected.glob("*.reason.json")]
    assert len(reasons) == 1 and "SHA-256 mismatch" in reasons[0], reasons
    assert "rejected 'edge/report.csv'" in result.stderr


def test_absurd_numbers_allocate_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    tera, peta = 1 << 40, 1 << 50
    claims: list[Message | tuple[bytes, list, bytes]] = [
        # A chunk far into a file declared to be a terabyte: stored sparsely, a claim only.
        Chunk(new_transfer_id(), "edge", "sparse.bin", 7, tera - 10, tera, b"0123456789"),
        # A petabyte offset is past what the filesystem can hold: refused, not crashed on.
        Chunk(new_transfer_id(), "edge", "peta.bin", 9, peta - 10, peta, b"0123456789"),
    ]
    key, headers, value = encode(Chunk(new_transfer_id(), "edge", "neg.bin", 0, 0, 5, b"12345"))
    bad_headers = [(k, b"-5" if k == "streamsend.offset" else v) for k, v in headers]
    claims.append((key, bad_headers, value))
    over = [(k, str(1 << 60).encode() if k == "streamsend.size" else v) for k, v in headers]
    claims.append((key, over, value))
    claims += whole_file("edge", "after.txt", b"still working")
    produce(pipeline.bootstrap, pipeline.topic, claims)
    out = tmp_path / "out"
    result = pipeline.download(out)
    assert (out / "edge" / "after.txt").read_bytes() == b"still working"
    assert disk_usage(out) < 10 * 2**20, "a header's claim must not allocate disk"
    assert result.stderr.count("is not a non-negative decimal number") == 1
    assert result.stderr.count("exceeds the limit") == 1
    # A declared size larger than the output filesystem is refused at its first record;
    # a smaller one is staged sparsely and reported incomplete at the idle exit.
    filesystem = os.statvfs(out).f_blocks * os.statvfs(out).f_frsize
    assert "refusing 'edge/peta.bin'" in result.stderr, explain(result)
    assert not list((out / ".streamsend" / "staging").iterdir()) or filesystem >= tera
    if filesystem < tera:
        assert "refusing 'edge/sparse.bin'" in result.stderr
        assert result.returncode == 0, explain(result)
    else:
        assert result.returncode != 0 and "sparse.bin" in result.stderr


def test_symlink_planted_in_output_dir_does_not_lead_outside(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (out / "edge").mkdir(parents=True)
    os.symlink(outside, out / "edge" / "docs")
    os.symlink(outside / "target.txt", out / "edge" / "link.txt")
    produce(
        pipeline.bootstrap,
        pipeline.topic,
        [
            *whole_file("edge", "docs/escape.txt", b"must not leave output.dir"),
            *whole_file("edge", "link.txt", b"replaces the link, not its target"),
        ],
    )
    result = pipeline.download(out)
    assert result.returncode == 0, explain(result)
    assert list(outside.iterdir()) == []
    assert "symlink" in result.stderr
    # A symlink at the final name is replaced by the file itself, never followed.
    assert not (out / "edge" / "link.txt").is_symlink()
    assert (out / "edge" / "link.txt").read_bytes() == b"replaces the link, not its target"
