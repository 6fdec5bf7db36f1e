"""Defect 9: after.upload acts on the file that was sent, never on a newer file that
replaced it at the same path while the transfer waited for its acknowledgements."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from defect_runs import Cli, content
from records import read_topic

from harness import explain, wait_for
from streamsend.wire.protocol import End, Pack, decode

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _kafka(action: str, cluster_dir: Path) -> None:
    cmd = [sys.executable, "-m", "streamsend", "kafka", action, "--dir", str(cluster_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"kafka {action}: {done.stderr}"


def _end_records(cli: Cli, uploader: str, path: str) -> int:
    """End records of the file, alone or inside pack records."""
    found = 0
    for r in read_topic(cli.bootstrap, cli.topic):
        message = decode(list(r.headers), r.value)
        for m in message.records() if isinstance(message, Pack) else [message]:
            found += isinstance(m, End) and (m.uploader, m.path) == (uploader, path)
    return found


def _write(path: Path, data: bytes) -> None:
    """Atomically, through a hidden temporary name (a new inode every time)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_file_replaced_while_unacknowledged_is_not_deleted(
    own_cluster: Any, unique_topic: str, tmp_path: Path
) -> None:
    """Defect 9: an uploader with after.upload=delete reads a file while the broker is down;
    the file is then replaced by a new version (new inode, other content) before the broker
    comes back and acknowledges the old one. The new version, never sent, must not be
    deleted: it is still in input.dir, or it was sent too (a downloader gets its bytes)."""
    cluster_dir = Path(own_cluster.dir)
    cli = Cli(own_cluster.bootstrap_servers, unique_topic, tmp_path)
    source = tmp_path / "in"
    source.mkdir()
    _write(source / "warmup.txt", b"warm-up\n")
    props = {
        "input.dir": str(source),
        "uploader.name": "up1",
        "file.minimum.age.ms": "0",
        "scan.interval.ms": "200",
        "after.upload": "delete",
    }
    uploader = cli.start("upload", props)
    victim = source / "victim.txt"
    old, new = b"version 1, sent\n", b"version 2, never sent yet\n"
    try:
        # Connected and working: the warm-up file was sent and deleted.
        wait_for(lambda: not (source / "warmup.txt").exists(), 120, "the warm-up upload")
        _kafka("down", cluster_dir)
        try:
            _write(victim, old)
            wait_for(
                lambda: "victim.txt" in uploader.output(), 60, "the uploader to read victim.txt"
            )
            time.sleep(1)
            _write(victim, new)
        finally:
            _kafka("up", cluster_dir)

        wait_for(lambda: _end_records(cli, "up1", "victim.txt"), 120, "version 1 on the topic")
        time.sleep(5)  # the acknowledgement, after.upload, and a rescan that may send v2
    finally:
        rc = uploader.stop(60)
    assert rc == 0, uploader.output()[-3000:]

    if content(victim) is not None:
        assert content(victim) == new
        return
    out = tmp_path / "out"
    down = cli.download(out, idle_ms=10000)
    assert content(out / "up1" / "victim.txt") == new, (
        "version 2 was deleted from input.dir without being sent\n"
        + uploader.output()[-3000:]
        + explain(down)
    )
