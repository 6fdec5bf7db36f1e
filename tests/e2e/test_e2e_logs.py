"""log.format=json through the real CLI and the real broker: every stderr line of
``upload --once`` and ``download --idle.exit.ms`` is a JSON object, the file events carry
uploader, path, bytes and outcome, and each side starts with its banner."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import Pipeline, age, explain, write_random
from streamsend import __version__

pytestmark = pytest.mark.kafka

FILES = {"a.bin": 3 * 2**20 + 7, "sub/small.txt": 1000, "empty": 0}


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    """Every stderr line parsed (a line that is not JSON fails the test, named)."""
    lines = result.stderr.split("\n")
    assert lines[-1] == "", explain(result)
    parsed = []
    for line in lines[:-1]:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{explain(result)}")
        assert {"time", "level", "logger", "message"} <= parsed[-1].keys(), line
    return parsed


def by_path(objects: list[dict[str, object]], name: str) -> dict[str, dict[str, object]]:
    return {str(o["path"]): o for o in objects if o.get("event") == name}


def assert_file_events(
    events: dict[str, dict[str, object]], outcome: str, result: subprocess.CompletedProcess[str]
) -> None:
    """One event per file, with its uploader, size, outcome and duration."""
    assert set(events) == set(FILES), explain(result)
    for relative, size in FILES.items():
        e = events[relative]
        assert (e["uploader"], e["bytes"], e["outcome"]) == ("up1", size, outcome), e
        assert isinstance(e["duration_s"], float), e


def test_json_logs_on_both_sides(pipeline: Pipeline, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    for i, (relative, size) in enumerate(FILES.items()):
        age(write_random(source / relative, size, seed=i))

    up = pipeline.upload(source, log_format="json", binary_chunk_size_bytes=str(2**20))
    assert up.returncode == 0, explain(up)
    up_lines = json_lines(up)
    assert_file_events(by_path(up_lines, "file.sent"), "sent", up)
    (banner,) = [o for o in up_lines if o.get("event") == "uploader.started"]
    assert banner["version"] == __version__ and banner["topic"] == pipeline.topic
    assert banner["chunk_bytes"] == 2**20 and banner["security_protocol"] == "PLAINTEXT"
    assert int(str(banner["partitions"])) >= 1 and banner["encryption"] is False
    assert int(str(banner["broker_message_max_bytes"])) > 2**20

    down = pipeline.download(out, idle_ms=3000, log_format="json")
    assert down.returncode == 0, explain(down)
    down_lines = json_lines(down)
    assert_file_events(by_path(down_lines, "file.delivered"), "delivered", down)
    (banner,) = [o for o in down_lines if o.get("event") == "downloader.started"]
    assert banner["topic"] == pipeline.topic and banner["partitions"] == banner["assigned"]
    assert str(banner["group_id"]).startswith("streamsend-downloader-")
    assert (out / "up1" / "sub" / "small.txt").stat().st_size == 1000
