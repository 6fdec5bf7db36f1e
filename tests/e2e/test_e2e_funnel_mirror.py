"""Many uploaders into one topic, many downloaders out of it, and a downloader restart."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness import Pipeline, Process, age, create_topic, explain, write_random
from streamsend.download.service import default_group_id
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka

CHUNK = "65536"
MIB = 1 << 20


def uploaders_in_order(bootstrap: str, topic: str) -> list[str]:
    """The streamsend.uploader header of every record of partition 0, in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "streamsend-test-read",
            "enable.partition.eof": True,
        }
    )
    found: list[str] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while True:
            msg = consumer.poll(10)
            assert msg is not None, "timed out reading the topic"
            if msg.error():
                break  # partition EOF
            headers = dict(msg.headers() or [])
            found.append(headers["streamsend.uploader"].decode())
    finally:
        consumer.close()
    return found


def committed_offset(bootstrap: str, output_dir: Path, topic: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": default_group_id(output_dir, topic)}
    )
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return tp.offset
    finally:
        consumer.close()


def high_watermark(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "streamsend-test-count"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
    finally:
        consumer.close()


def finish(proc: Process, timeout: float = 120) -> int:
    """Wait for a process started with Pipeline.start and close its log file."""
    try:
        return proc.wait(timeout)
    finally:
        proc.stop()


def delivered(log: str) -> list[str]:
    return re.findall(r"delivered '([^']+)'", log)


def make_files(root: Path, sizes: dict[str, int], seed: int) -> None:
    for i, (name, size) in enumerate(sizes.items()):
        write_random(root / name, size, seed=seed + i)
        age(root / name)


def test_two_uploaders_funnel_into_one_topic(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    sources = {name: tmp_path / name for name in ("shop-a", "shop-b")}
    for seed, root in enumerate(sources.values()):
        make_files(
            root, {"big-1.bin": 4 * MIB + 17, "sub/big-2.bin": 3 * MIB, "small.txt": 99}, seed * 10
        )
    procs = {
        name: pipeline.start(
            "upload",
            {
                "input.dir": str(root),
                "uploader.name": name,
                "file.minimum.age.ms": "0",
                "binary.chunk.size.bytes": CHUNK,
                # librdkafka pass-through: one chunk in flight at a time, so each uploader
                # sends for over a second and start-up jitter cannot serialise the two.
                "queue.buffering.max.messages": "1",
                "linger.ms": "10",
            },
            ["--once"],
        )
        for name, root in sources.items()
    }
    for name, proc in procs.items():
        assert finish(proc) == 0, f"{name}:\n{proc.output()}"

    # The two uploaders really shared the topic at the same time: their records interleave.
    order = uploaders_in_order(pipeline.bootstrap, pipeline.topic)
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert set(order) == {"shop-a", "shop-b"}
    assert switches >= 2, f"records did not interleave ({switches} switch(es))"

    out = tmp_path / "out"
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert sorted(p.name for p in out.iterdir()) == [".streamsend", "shop-a", "shop-b"]
    for name, root in sources.items():
        assert compare_trees(root, out / name) == [], name


def test_two_downloaders_each_mirror_everything(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source = tmp_path / "in"
    make_files(source, {"a.bin": 300_000, "dir/b.txt": 1000, "empty": 0}, seed=1)
    up = pipeline.upload(source, binary_chunk_size_bytes=CHUNK)
    assert up.returncode == 0, explain(up)
    outs = [tmp_path / "out-1", tmp_path / "out-2"]
    assert default_group_id(outs[0], pipeline.topic) != default_group_id(outs[1], pipeline.topic)
    procs = [
        pipeline.start("download", {"output.dir": str(out), "idle.exit.ms": "4000"}) for out in outs
    ]
    for proc in procs:
        assert finish(proc) == 0, proc.output()
    for out in outs:
        assert compare_trees(source, out / "up1") == [], out


def test_restarted_downloader_continues_where_it_stopped(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "out"
    make_files(source, {"old-1.bin": 200_000, "old/2.txt": 500}, seed=20)
    up = pipeline.upload(source, binary_chunk_size_bytes=CHUNK)
    assert up.returncode == 0, explain(up)
    # A marker: any run that reads the topic from the start warns about this record.
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    producer.produce(pipeline.topic, value=b"marker, not a Streamsend record")
    assert producer.flush(30) == 0
    first = pipeline.download(out)
    assert first.returncode == 0, explain(first)
    assert sorted(delivered(first.stderr)) == [
        str(out / "up1/old-1.bin"),
        str(out / "up1/old/2.txt"),
    ]
    assert "not a Streamsend record" in first.stderr
    end = high_watermark(pipeline.bootstrap, pipeline.topic)
    assert committed_offset(pipeline.bootstrap, out, pipeline.topic) == end
    before = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in (out / "up1").rglob("*")
        if p.is_file()
    }

    make_files(source, {"new-1.bin": 150_000, "old/new-2.txt": 700}, seed=30)
    up = pipeline.upload(source, binary_chunk_size_bytes=CHUNK)
    assert up.returncode == 0, explain(up)
    assert "done: 2 file(s)" in up.stderr, up.stderr
    second = pipeline.download(out)
    assert second.returncode == 0, explain(second)

    # Only the new files were delivered, and the run read only the new records.
    assert sorted(delivered(second.stderr)) == [
        str(out / "up1/new-1.bin"),
        str(out / "up1/old/new-2.txt"),
    ]
    assert "not a Streamsend record" not in second.stderr, "the topic was read again from the start"
    assert committed_offset(pipeline.bootstrap, out, pipeline.topic) == high_watermark(
        pipeline.bootstrap, pipeline.topic
    )
    # The old files were left alone: same inode, same mtime, same bytes.
    for path, (inode, mtime, data) in before.items():
        st = path.stat()
        assert (st.st_ino, st.st_mtime_ns) == (inode, mtime), path
        assert path.read_bytes() == data, path
    assert compare_trees(source, out / "up1") == []
