"""Defect 7: one output.dir used for a second topic must not reuse the first topic's
consumer group."""

from __future__ import annotations

from pathlib import Path

import pytest
from defect_runs import Cli, content
from records import Transfer, produce

from harness import create_topic, explain

pytestmark = pytest.mark.kafka


def test_same_output_dir_then_another_topic_gets_its_files(cli: Cli, tmp_path: Path) -> None:
    """Defect 7: a downloader runs on topic A (one file delivered, idle exit), then at once
    (well within the group session timeout) another downloader with the same output.dir
    and the default group runs on topic B: B's file must be delivered too."""
    topic_a, topic_b = f"{cli.topic}-a", f"{cli.topic}-b"
    file_a = Transfer("up1", "from-a.txt", b"topic A\n")
    file_b = Transfer("up1", "from-b.txt", b"topic B\n")
    for topic, file in ((topic_a, file_a), (topic_b, file_b)):
        create_topic(cli.bootstrap, topic)
        produce(cli.bootstrap, topic, file.records())
    out = tmp_path / "out"

    cli.topic = topic_a
    first = cli.download(out)
    assert first.returncode == 0, explain(first)
    assert content(out / "up1" / "from-a.txt") == file_a.data, explain(first)

    cli.topic = topic_b
    second = cli.download(out)
    assert content(out / "up1" / "from-b.txt") == file_b.data, (
        "topic B's file was not delivered\n" + explain(second)
    )
    assert second.returncode == 0, explain(second)
