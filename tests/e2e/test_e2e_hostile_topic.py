"""Records the downloader did not expect: someone else's messages, a future protocol
version, and well-formed records whose paths try to leave output.dir."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from confluent_kafka import Producer

from harness import Pipeline, age, create_topic, explain, write_random
from streamsend.verify import compare_trees
from streamsend.wire.protocol import Chunk, End, encode, new_transfer_id

pytestmark = pytest.mark.kafka


def produce(bootstrap: str, topic: str, records: list[dict[str, object]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        producer.produce(topic, **record)
    assert producer.flush(30) == 0


def transfer(uploader: str, path: str, data: bytes) -> list[dict[str, object]]:
    """A complete, valid transfer (Chunk + End with the right SHA-256) as Kafka records."""
    tid = new_transfer_id()
    messages = [
        Chunk(tid, uploader, path, 0, 0, len(data), data),
        End(
            tid,
            uploader,
            path,
            size=len(data),
            chunks=1,
            sha256=hashlib.sha256(data).hexdigest(),
            mtime_ns=1_700_000_000_000_000_000,
            mode=0o644,
        ),
    ]
    records = []
    for message in messages:
        key, headers, value = encode(message)
        records.append({"key": key, "headers": headers, "value": value})
    return records


def foreign_records(seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    future_key, future_headers, future_value = encode(
        Chunk(new_transfer_id(), "up1", "future.bin", 0, 0, 5, b"hello")
    )
    future_headers = [(k, b"99" if k == "streamsend.version" else v) for k, v in future_headers]
    return [
        {"value": b"plain text, no headers"},
        {"value": None, "key": b"tombstone"},
        {"value": rng.randbytes(300), "headers": [("content-type", b"application/json")]},
        {
            "value": rng.randbytes(50),
            "headers": [(f"h{i}", rng.randbytes(rng.randint(0, 40))) for i in range(5)],
        },
        # Streamsend-looking headers without the version: still someone else's record.
        {"value": b"x", "headers": [("streamsend.type", b"chunk"), ("streamsend.path", b"x")]},
        {"key": future_key, "headers": future_headers, "value": future_value},
    ]


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_foreign_records_are_skipped(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "out"
    produce(pipeline.bootstrap, pipeline.topic, foreign_records(1))
    write_random(source / "first.bin", 100_000, seed=1)
    age(source / "first.bin")
    up = pipeline.upload(source)
    assert up.returncode == 0, explain(up)
    # More noise between two real uploads: the downloader keeps going after it.
    produce(pipeline.bootstrap, pipeline.topic, foreign_records(2))
    write_random(source / "sub/second.txt", 2_000, seed=2)
    age(source / "sub/second.txt")
    up = pipeline.upload(source)
    assert up.returncode == 0, explain(up)

    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    log = down.stderr
    assert log.count("not a Streamsend record") == 2 * 5, log
    assert log.count("protocol version '99' is not supported") == 2, log
    assert "Traceback" not in log
    assert compare_trees(source, out / "up1") == []


def test_unsafe_paths_are_rejected(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "a" / "b" / "out"
    absolute = tmp_path / "absolute-escape"
    etc_x_existed = os.path.lexists("/etc/x")
    hostile = [
        ("up1", "../../escape"),
        ("up1", "sub/../../../escape-2"),
        ("up1", str(absolute)),
        ("up1", "/etc/x"),
        ("..", "escape-3"),
    ]
    for uploader, path in hostile:
        produce(pipeline.bootstrap, pipeline.topic, transfer(uploader, path, b"pwned\n"))
    write_random(source / "real.bin", 50_000, seed=3)
    age(source / "real.bin")
    out.parent.mkdir(parents=True)
    before = tree(tmp_path)
    up = pipeline.upload(source)
    assert up.returncode == 0, explain(up)

    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    unsafe = [line for line in down.stderr.splitlines() if "unsafe path" in line]
    for _uploader, path in hostile[:-1]:
        assert any(repr(path) in line for line in unsafe), (path, down.stderr)
    assert len(unsafe) >= len(hostile), down.stderr
    assert compare_trees(source, out / "up1") == []

    # Nothing was written outside output.dir: the only other new paths are the log files
    # and the uploader's lock file.
    ours = ("a/b/out", "logs/", "in/.streamsend-uploader.lock")
    assert {p for p in tree(tmp_path) - before if not p.startswith(ours)} == set()
    assert not absolute.exists()
    assert etc_x_existed or not os.path.lexists("/etc/x")
    # Inside output.dir only the real file was delivered; the rejected transfers left no
    # staging data behind.
    assert sorted(p.relative_to(out / "up1").as_posix() for p in (out / "up1").rglob("*")) == [
        "real.bin"
    ]
    assert sorted(p.name for p in out.iterdir()) == [".streamsend", "up1"]
    assert not list((out / ".streamsend" / "staging").iterdir())


def test_symlinks_inside_output_dir_do_not_lead_out(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    out = tmp_path / "out"
    outside_dir, outside_file = tmp_path / "outside-dir", tmp_path / "outside-file"
    outside_dir.mkdir()
    outside_file.write_text("precious\n")
    (out / "up1").mkdir(parents=True)
    (out / "up1" / "dir-link").symlink_to(outside_dir)
    (out / "up1" / "file-link").symlink_to(outside_file)
    produce(pipeline.bootstrap, pipeline.topic, transfer("up1", "dir-link/payload", b"pwned\n"))
    produce(pipeline.bootstrap, pipeline.topic, transfer("up1", "file-link", b"new\n"))
    produce(pipeline.bootstrap, pipeline.topic, transfer("up1", "after.txt", b"fine\n"))

    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert "rejected 'up1/dir-link/payload'" in down.stderr
    assert list(outside_dir.iterdir()) == []
    assert outside_file.read_text() == "precious\n"
    # A symlink at the final path is replaced by the delivered file, never written through.
    assert not (out / "up1" / "file-link").is_symlink()
    assert (out / "up1" / "file-link").read_bytes() == b"new\n"
    assert (out / "up1" / "after.txt").read_bytes() == b"fine\n"
