"""Defect 12: the uploader's state topic: tombstones for deleted files, one partition per
uploader, and a refusal to use a state topic that is not compacted."""

from __future__ import annotations

from pathlib import Path

import pytest
from defect_runs import Cli, error_lines
from records import read_topic

from harness import create_topic, explain

pytestmark = pytest.mark.kafka


def test_deleted_file_gets_a_tombstone(cli: Cli, tmp_path: Path) -> None:
    """Defect 12: (a) a file is sent, then deleted from input.dir; the next `upload --once`
    writes a tombstone (null value) for its key `{topic}/{uploader}/{path}`."""
    state = f"{cli.topic}-state"
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "gone.txt").write_text("soon deleted\n")
    (source / "kept.txt").write_text("stays\n")
    up = cli.upload(source, processing_state_topic=state)
    assert up.returncode == 0, explain(up)
    (source / "sub" / "gone.txt").unlink()
    again = cli.upload(source, processing_state_topic=state)
    assert again.returncode == 0, explain(again)

    wanted = f"{cli.topic}/up1/sub/gone.txt".encode()
    values = [r.value for r in read_topic(cli.bootstrap, state) if r.key == wanted]
    assert values and values[0] is not None, f"no state record for {wanted!r}: {values}"
    assert values[-1] is None, f"no tombstone for {wanted!r} after its deletion: {values}"
    kept = f"{cli.topic}/up1/kept.txt".encode()
    kept_values = [r.value for r in read_topic(cli.bootstrap, state) if r.key == kept]
    assert kept_values and None not in kept_values, kept_values


def test_state_records_of_one_uploader_share_one_partition(cli: Cli, tmp_path: Path) -> None:
    """Defect 12: (b) on a state topic created beforehand with 8 partitions (compacted), the
    state records of an uploader that sent 20 files are all on one partition."""
    state = f"{cli.topic}-state"
    create_topic(cli.bootstrap, state, partitions=8, config={"cleanup.policy": "compact"})
    source = tmp_path / "in"
    source.mkdir()
    for i in range(20):
        (source / f"f{i:02d}.txt").write_text(f"file {i}\n")
    up = cli.upload(source, processing_state_topic=state)
    assert up.returncode == 0, explain(up)

    records = [r for r in read_topic(cli.bootstrap, state) if r.key is not None]
    assert len(records) >= 20, records
    partitions = {r.partition for r in records}
    assert len(partitions) == 1, f"state records spread over partitions {sorted(partitions)}"


def test_state_topic_without_compaction_is_refused(cli: Cli, tmp_path: Path) -> None:
    """Defect 12: (c) a state topic that exists with cleanup.policy=delete (its records would
    expire and every file be sent again) makes the uploader exit 2 with one error line
    naming the topic."""
    state = f"{cli.topic}-state"
    create_topic(cli.bootstrap, state, config={"cleanup.policy": "delete"})
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    up = cli.upload(source, processing_state_topic=state)
    assert up.returncode == 2, explain(up)
    lines = error_lines(up.stderr)
    assert len(lines) == 1 and state in lines[0], explain(up)
