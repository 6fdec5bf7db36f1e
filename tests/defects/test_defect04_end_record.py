"""Defect 4: an end record consumed (and committed) before the file's last chunk is
forgotten by a restarted downloader."""

from __future__ import annotations

from pathlib import Path

import pytest
from defect_runs import Cli, content, staged
from records import Transfer, on_partition, produce

from harness import create_topic, explain

pytestmark = pytest.mark.kafka


def test_end_record_survives_a_restart_before_the_last_chunk(cli: Cli, tmp_path: Path) -> None:
    """Defect 4: on a 2-partition topic, the end record (partition 1) and the first chunk
    (partition 0) of a 2-chunk file are consumed by a downloader that then exits, incomplete
    (exit 6), committing what it consumed. The second chunk is produced afterwards; the next
    run must complete the file (exit 0) although the end record is never read again."""
    create_topic(cli.bootstrap, cli.topic, partitions=2)
    file = Transfer("up1", "late.bin", b"0123456789" * 300, chunk_size=2000)
    produce(cli.bootstrap, cli.topic, [on_partition(file.end(), 1), on_partition(file.chunk(0), 0)])
    out = tmp_path / "out"

    first = cli.download(out)
    assert first.returncode == 6, explain(first)
    assert not (out / "up1" / "late.bin").exists()

    produce(cli.bootstrap, cli.topic, [on_partition(file.chunk(1), 0)])
    second = cli.download(out)
    assert content(out / "up1" / "late.bin") == file.data, "not delivered\n" + explain(second)
    assert second.returncode == 0, explain(second)
    assert staged(out) == [], staged(out)
