"""What the uploader remembers between runs, and what it does with a file once sent."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
)

from harness import (
    Pipeline,
    age,
    count_records,
    create_topic,
    explain,
    tmpfs,
    wait_for,
    write_random,
)
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka

CHUNK = "65536"


@pytest.fixture
def state_topic(unique_topic: str) -> str:
    return f"{unique_topic}-state"


def topic_names(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


def sent_names(log: str) -> list[str]:
    return sorted(re.findall(r"sent '([^']+)'", log))


def files_done(log: str) -> int:
    match = re.search(r"done: (\d+) file\(s\)", log)
    assert match, log
    return int(match.group(1))


def test_unchanged_files_are_not_sent_again(
    pipeline: Pipeline, tmp_path: Path, state_topic: str
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "out"
    write_random(source / "a.bin", 200_000, seed=1)
    write_random(source / "sub/b.txt", 5_000, seed=2)
    age(source / "a.bin", 7200)
    age(source / "sub/b.txt", 7200)
    state = {"processing_state_topic": state_topic, "binary_chunk_size_bytes": CHUNK}

    first = pipeline.upload(source, **state)
    assert first.returncode == 0, explain(first)
    assert sent_names(first.stderr) == ["a.bin", "sub/b.txt"]
    after_first = count_records(pipeline.bootstrap, pipeline.topic)
    assert after_first == 4 + 1 + 1  # a.bin: 4 chunks + End; b.txt: one pack record
    assert count_records(pipeline.bootstrap, state_topic) == 2
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert compare_trees(source, out / "up1") == []

    # A new process knows from the state topic that nothing changed.
    second = pipeline.upload(source, **state)
    assert second.returncode == 0, explain(second)
    assert "state: 2 file(s) already sent" in second.stderr, second.stderr
    assert files_done(second.stderr) == 0
    assert count_records(pipeline.bootstrap, pipeline.topic) == after_first

    # Same size, new bytes, new mtime: only that file goes again.
    write_random(source / "sub/b.txt", 5_000, seed=3)
    age(source / "sub/b.txt", 60)
    third = pipeline.upload(source, **state)
    assert third.returncode == 0, explain(third)
    assert sent_names(third.stderr) == ["sub/b.txt"]
    assert files_done(third.stderr) == 1
    assert count_records(pipeline.bootstrap, pipeline.topic) == after_first + 1

    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert (out / "up1/sub/b.txt").read_bytes() == (source / "sub/b.txt").read_bytes()
    assert compare_trees(source, out / "up1") == []


def test_state_topic_is_compacted(pipeline: Pipeline, tmp_path: Path, state_topic: str) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source = tmp_path / "in"
    write_random(source / "a.txt", 100)
    up = pipeline.upload(source, processing_state_topic=state_topic)
    assert up.returncode == 0, explain(up)
    admin = AdminClient({"bootstrap.servers": pipeline.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, state_topic)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"


@pytest.mark.parametrize("action", ["rename", "delete"])
def test_after_upload(pipeline: Pipeline, tmp_path: Path, state_topic: str, action: str) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out, reference = tmp_path / "in", tmp_path / "out", tmp_path / "reference"
    for i, name in enumerate(["a.bin", "d/b.bin"]):
        write_random(reference / name, 150_000 + i, seed=i)
        age(reference / name)
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(reference / name, source / name)
    up = pipeline.upload(
        source,
        processing_state_topic=state_topic,
        binary_chunk_size_bytes=CHUNK,
        after_upload=action,
    )
    assert up.returncode == 0, explain(up)
    # Every record was acknowledged before the file was touched.
    assert count_records(pipeline.bootstrap, pipeline.topic) == 2 * (3 + 1)
    left = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    kept = [".streamsend-uploader.lock"]
    if action == "rename":
        assert left == sorted([*kept, "a.bin.FINISHED", "d/b.bin.FINISHED"])
        for name in ["a.bin", "d/b.bin"]:
            finished = source / f"{name}.FINISHED"
            assert finished.read_bytes() == (reference / name).read_bytes()
    else:
        assert left == kept

    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert compare_trees(reference, out / "up1") == []

    # The renamed files are not picked up again.
    again = pipeline.upload(source, processing_state_topic=state_topic)
    assert again.returncode == 0, explain(again)
    assert files_done(again.stderr) == 0
    assert count_records(pipeline.bootstrap, pipeline.topic) == 2 * (3 + 1)


def set_max_message_bytes(bootstrap: str, topic: str, value: str | None) -> None:
    """Set (or, with None, remove) the topic's max.message.bytes override."""
    entry = (
        ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)
        if value is not None
        else ConfigEntry("max.message.bytes", "", incremental_operation=AlterConfigOpType.DELETE)
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result()

    # The change is accepted before the broker applies it; the uploader picks a file up
    # within milliseconds, so wait until the broker reports it.
    def applied() -> bool:
        topic_resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        found = admin.describe_configs([topic_resource])[topic_resource].result()
        current = found["max.message.bytes"]
        if value is None:  # the broker's own limit again
            return current.source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        return current.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and current.value == value

    wait_for(applied, 30, f"max.message.bytes={value} to apply")


def refused_then_accepted(pipeline: Pipeline, tmp_path: Path, state_topic: str) -> int:
    """A long-running uploader with after.upload=delete whose first attempts the broker
    refuses: the file must stay until a later attempt is acknowledged, then go. Returns the
    uploader's exit code after SIGTERM."""
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out, reference = tmp_path / "in", tmp_path / "out", tmp_path / "reference"
    source.mkdir()
    original = write_random(reference / "a.bin", 100_000)
    age(original)
    uploader = pipeline.start(
        "upload",
        {
            "input.dir": str(source),
            "uploader.name": "up1",
            "file.minimum.age.ms": "0",
            "scan.interval.ms": "200",
            "binary.chunk.size.bytes": CHUNK,
            "processing.state.topic": state_topic,
            "after.upload": "delete",
        },
    )
    try:
        wait_for(lambda: "state: 0 file(s)" in uploader.output(), 60, "the uploader to start")
        # The broker now refuses every chunk (the uploader sized them before).
        set_max_message_bytes(pipeline.bootstrap, pipeline.topic, "1024")
        staged = source / ".a.bin.tmp"
        shutil.copy2(original, staged)
        staged.rename(source / "a.bin")
        wait_for(lambda: "failed to send 'a.bin'" in uploader.output(), 60, "the refusal")
        time.sleep(1)
        assert (source / "a.bin").is_file(), "deleted although Kafka refused it"
        assert "sent 'a.bin'" not in uploader.output()

        # Once the broker takes the chunks, the file is sent again and only then deleted.
        set_max_message_bytes(pipeline.bootstrap, pipeline.topic, None)
        wait_for(lambda: not (source / "a.bin").exists(), 60, "the file to be deleted")
        assert "sent 'a.bin'" in uploader.output()
    finally:
        code = uploader.stop()
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert compare_trees(reference, out / "up1") == []
    return code


def test_delete_only_after_acknowledgement(
    pipeline: Pipeline, tmp_path: Path, state_topic: str
) -> None:
    refused_then_accepted(pipeline, tmp_path, state_topic)


def test_stopped_uploader_exits_0_when_a_refused_file_was_sent_later(
    pipeline: Pipeline, tmp_path: Path, state_topic: str
) -> None:
    code = refused_then_accepted(pipeline, tmp_path, state_topic)
    assert code == 0


def test_dry_run_produces_nothing(pipeline: Pipeline, tmp_path: Path, state_topic: str) -> None:
    source = tmp_path / "in"
    write_random(source / "a.bin", 300_000)
    write_random(source / "b.txt", 10)
    up = pipeline.upload(
        source, dry_run="yes", processing_state_topic=state_topic, after_upload="delete"
    )
    assert up.returncode == 0, explain(up)
    assert "dry run" in up.stderr
    assert files_done(up.stderr) == 2
    # Neither topic was created (or, if someone else created it, it holds nothing).
    topics = topic_names(pipeline.bootstrap)
    for topic in (pipeline.topic, state_topic):
        assert topic not in topics or count_records(pipeline.bootstrap, topic) == 0
    # after.upload is not applied in a dry run.
    assert (source / "a.bin").is_file() and (source / "b.txt").is_file()


def test_read_only_input_dir_is_sent(pipeline: Pipeline, tmp_path: Path) -> None:
    """Media or snapshots mounted read-only: the lock moves to the user's cache."""
    with tmpfs(tmp_path / "media", "size=8m") as media:
        write_random(media / "photos" / "img-1.raw", 300_000, seed=1)
        age(media / "photos" / "img-1.raw")
        subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
        up = pipeline.upload(media, name="camera")
        assert up.returncode == 0, explain(up)
        down = pipeline.download(tmp_path / "out")
        assert down.returncode == 0, explain(down)
        assert compare_trees(media, tmp_path / "out" / "camera") == []
