"""``streamsend inspect`` on the real broker: complete, incomplete and encrypted files, in
text and JSON, with and without the identity; it writes nothing and joins no group (no
group of its own appears, a downloader group's committed offsets do not move)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from test_e2e_cli_errors import one_line_error, streamsend
from test_e2e_encryption import keygen

from defects.records import Transfer, produce
from harness import Pipeline, age, count_records, create_topic, explain, wait_for, write_random
from streamsend.errors import ExitStatus

pytestmark = pytest.mark.kafka

CHUNK = 16384


def groups(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups().result(timeout=30)
    return {g.group_id for g in listed.valid}


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(parts, timeout=30)]
    finally:
        consumer.close()


def inspect(pipeline: Pipeline, *extra: str) -> str:
    done = streamsend(
        "inspect", "--bootstrap.servers", pipeline.bootstrap, "--topic", pipeline.topic, *extra
    )
    assert done.returncode == 0, explain(done)
    return done.stdout


def by_path(document: dict[str, object]) -> dict[str, dict[str, object]]:
    """uploader/path -> its only version (uploader/transfer for a file no key opens)."""
    found = {}
    for f in document["files"]:  # type: ignore[attr-defined]
        [v] = f["versions"]
        found[f"{f['uploader']}/{f['path'] or v['transfer']}"] = v
    return found


def test_inspect_lists_files_and_leaves_no_trace(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=2)
    small = {"binary.chunk.size.bytes": str(CHUNK), "processing.state.topic": f"{pipeline.topic}-s"}
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    write_random(plain / "big.bin", 2 * CHUNK + 5)
    (plain / "note.txt").write_text("packed\n")
    write_random(sealed / "secret.bin", CHUNK + 1, seed=2)
    for path in [*plain.iterdir(), *sealed.iterdir()]:
        age(path)
    assert pipeline.upload(plain, "plain", **small).returncode == 0
    recipient = keygen(tmp_path / "id")
    done = pipeline.upload(sealed, "sealed", encryption_recipients=recipient, **small)
    assert done.returncode == 0, explain(done)
    partial = Transfer("hand", "partial.bin", b"p" * 300, chunk_size=100)
    produce(pipeline.bootstrap, pipeline.topic, partial.chunks()[:2])  # no third, no end
    produce(pipeline.bootstrap, pipeline.topic, [{"key": b"x", "value": b"not ours"}])

    group = f"inspect-test-{uuid.uuid4().hex}"
    got = pipeline.download(tmp_path / "out", group_id=group, idle_ms=2000)
    assert got.returncode == ExitStatus.INCOMPLETE, explain(got)  # partial.bin
    offsets = committed(pipeline.bootstrap, group, pipeline.topic, 2)
    before, records = groups(pipeline.bootstrap), count_records(pipeline.bootstrap, pipeline.topic)

    text = inspect(pipeline)
    lines = text.splitlines()
    assert lines[0].startswith(f"topic {pipeline.topic}: 2 partition(s), ")
    assert "1 foreign, 0 malformed" in lines[0]
    listing = "\n".join(lines)
    assert "plain/big.bin\n" in listing and "plain/note.txt\n" in listing
    assert "hand/partial.bin\n" in listing and "sealed (encrypted, no key)" in listing
    assert "secret.bin" not in text
    assert lines[-1] == (
        "totals: 4 file(s), 4 version(s): 2 complete, 1 incomplete, 0 aborted, 1 unverified; "
        f"1 encrypted; {2 * CHUNK + 5 + 7 + 300} bytes"
    )
    big = lines[lines.index("plain/big.bin") + 1]
    assert f"complete    {2 * CHUNK + 5} bytes  3/3 chunks  clear" in big
    assert "incomplete  300 bytes  2/? chunks  clear" in lines[lines.index("hand/partial.bin") + 1]

    document = json.loads(inspect(pipeline, "--json"))
    assert document["totals"]["unverified"] == 1
    assert document["records"]["foreign"] == 1
    assert sum(p["end"] - p["start"] for p in document["partitions"]) == records
    keyed = json.loads(
        inspect(pipeline, "--json", "--encryption.identity.file", str(tmp_path / "id"))
    )
    files = by_path(keyed)
    assert files["sealed/secret.bin"]["status"] == "complete"
    assert files["sealed/secret.bin"]["encrypted"] is True
    assert files["sealed/secret.bin"]["size"] == CHUNK + 1
    assert files["plain/note.txt"]["packed"] is True
    assert (files["hand/partial.bin"]["chunks"], files["hand/partial.bin"]["status"]) == (
        2,
        "incomplete",
    )
    first, last = files["plain/big.bin"]["first"], files["plain/big.bin"]["last"]
    assert first["partition"] == last["partition"] and last["offset"] == first["offset"] + 3
    assert keyed["totals"] == {
        "files": 4,
        "versions": 4,
        "complete": 3,
        "incomplete": 1,
        "aborted": 0,
        "unverified": 0,
        "encrypted": 1,
        "bytes": 2 * CHUNK + 5 + 7 + 300 + CHUNK + 1,
    }
    with_key = inspect(pipeline, "--encryption.identity.file", str(tmp_path / "id"))
    assert "sealed/secret.bin\n" in with_key

    # Nothing written, no group of inspect's own, the downloader's offsets unmoved.
    assert count_records(pipeline.bootstrap, pipeline.topic) == records
    assert not {g for g in groups(pipeline.bootstrap) - before if g.startswith("streamsend-")}
    assert committed(pipeline.bootstrap, group, pipeline.topic, 2) == offsets


def test_unknown_topic_is_one_line(pipeline: Pipeline) -> None:
    done = streamsend(
        "inspect", "--bootstrap.servers", pipeline.bootstrap, "--topic", "nope-" + uuid.uuid4().hex
    )
    assert "does not exist" in one_line_error(done, ExitStatus.CONFIG)


def test_unreachable_broker_waits_like_the_services(tmp_path: Path) -> None:
    log = tmp_path / "inspect.log"
    with log.open("w") as fp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamsend",
                "inspect",
                "--bootstrap.servers",
                "127.0.0.1:1",
                "--topic",
                "t",
            ],
            stdout=fp,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "Kafka is unreachable" in log.read_text(), 30, "the unreachable line")
            assert proc.poll() is None  # waiting, not failed
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == ExitStatus.INTERRUPTED, log.read_text()
