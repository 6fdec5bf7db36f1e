"""What the user sees when something is wrong: one line on stderr and a documented exit
code. And the two other ways to configure: a properties file and the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import (
    Pipeline,
    age,
    count_records,
    create_topic,
    explain,
    one_line_error,
    write_random,
)
from streamsend.errors import ExitStatus
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka


def streamsend(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSEND_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamsend", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def upload_args(pipeline: Pipeline, input_dir: Path | str, *extra: str) -> list[str]:
    return [
        "upload",
        "--bootstrap.servers",
        pipeline.bootstrap,
        "--topic",
        pipeline.topic,
        "--input.dir",
        str(input_dir),
        "--file.minimum.age.ms",
        "0",
        *extra,
    ]


def test_unknown_property_names_the_key_and_a_suggestion(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    result = streamsend(*upload_args(pipeline, tmp_path), "--input.dri", str(tmp_path), "--once")
    message = one_line_error(result, ExitStatus.CONFIG)
    assert "'input.dri'" in message
    assert "did you mean 'input.dir'" in message


def test_invalid_value(pipeline: Pipeline, tmp_path: Path) -> None:
    result = streamsend(*upload_args(pipeline, tmp_path), "--file.minimum.age.ms", "abc")
    message = one_line_error(result, ExitStatus.CONFIG)
    assert "file.minimum.age.ms" in message
    assert "'abc'" in message


@pytest.mark.parametrize("via_symlink", [False, True])
def test_system_directory_is_refused(pipeline: Pipeline, tmp_path: Path, via_symlink: bool) -> None:
    input_dir = Path("/usr")
    if via_symlink:
        input_dir = tmp_path / "innocent"
        input_dir.symlink_to("/usr")
    result = streamsend(*upload_args(pipeline, input_dir), "--once")
    message = one_line_error(result, ExitStatus.CONFIG)
    assert "'/usr'" in message
    assert "system directory" in message


def test_missing_input_dir(pipeline: Pipeline, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    result = streamsend(*upload_args(pipeline, missing), "--once")
    message = one_line_error(result, ExitStatus.ENVIRONMENT)
    assert str(missing) in message
    assert not missing.exists()


def test_second_uploader_on_the_same_directory(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source = tmp_path / "in"
    source.mkdir()
    first = pipeline.start(
        "upload", {"input.dir": str(source), "uploader.name": "up1", "scan.interval.ms": "200"}
    )
    try:
        lock = source / ".streamsend-uploader.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() == str(first.proc.pid)):
            assert first.proc.poll() is None, first.output()
            assert time.monotonic() < deadline, "the first uploader never took the lock"
            time.sleep(0.1)
        second = streamsend(*upload_args(pipeline, source), "--once")
        message = one_line_error(second, ExitStatus.ENVIRONMENT)
        assert f"pid {first.proc.pid}" in message
        assert str(source) in message
    finally:
        code = first.stop()
    assert code == 0, first.output()


def test_output_dir_that_cannot_be_created(pipeline: Pipeline, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "out"
    result = streamsend(
        "download",
        "--bootstrap.servers",
        pipeline.bootstrap,
        "--topic",
        pipeline.topic,
        "--output.dir",
        str(out),
        "--idle.exit.ms",
        "1000",
    )
    message = one_line_error(result, ExitStatus.ENVIRONMENT)
    assert str(out) in message
    assert blocker.read_text() == "not a directory"


def test_config_file_and_flag_override(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "out"
    write_random(source / "a.txt", 1000)
    age(source / "a.txt")
    config = tmp_path / "upload.properties"
    config.write_text(
        "# a Java properties file\n"
        f"bootstrap.servers = {pipeline.bootstrap}\n"
        f"topic: {pipeline.topic}\n"
        f"input.dir={source}\n"
        "file.minimum.age.ms=0\n"
        "uploader.name=from-file\n"
        "after.upload=rename\n"
        # A downloader property in a shared file is ignored by the uploader.
        "idle.exit.ms=1000\n"
    )
    up = streamsend("upload", "--config", str(config), "--uploader.name", "from-flag", "--once")
    assert up.returncode == 0, explain(up)
    assert (source / "a.txt.FINISHED").is_file()  # after.upload came from the file
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert sorted(p.name for p in out.iterdir()) == [".streamsend", "from-flag"]
    assert (out / "from-flag" / "a.txt").read_bytes() == (source / "a.txt.FINISHED").read_bytes()


def test_topic_from_the_environment(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    source, out = tmp_path / "in", tmp_path / "out"
    write_random(source / "a.bin", 5000)
    age(source / "a.bin")
    up = streamsend(
        "upload",
        "--bootstrap.servers",
        pipeline.bootstrap,
        "--input.dir",
        str(source),
        "--uploader.name",
        "up1",
        "--file.minimum.age.ms",
        "0",
        "--once",
        env={"STREAMSEND_TOPIC": pipeline.topic},
    )
    assert up.returncode == 0, explain(up)
    assert count_records(pipeline.bootstrap, pipeline.topic) == 1  # one pack record
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert compare_trees(source, out / "up1") == []
