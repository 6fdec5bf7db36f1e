"""Constant memory: a 1 GiB file passes through both sides in a fixed, small footprint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import age, write_random

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FILE_BYTES = 1 << 30
RSS_BOUND = 256 * 2**20  # a quarter of the file; measured peaks are ~80-110 MiB


def peak_rss(cmd: list[str], log: Path) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of one process, from the kernel's rusage."""
    with log.open("w") as fp:
        proc = subprocess.Popen(cmd, stdout=fp, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    # Reaped by wait4: tell Popen, or it warns that the child is still running.
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024


def test_one_gib_file_in_bounded_memory(
    bootstrap_servers: str, unique_topic: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    big = write_random(source / "one-gib.bin", FILE_BYTES, seed=7)
    age(big)
    cli = [sys.executable, "-m", "streamsend"]
    common = ["--bootstrap.servers", bootstrap_servers, "--topic", unique_topic]
    up_rc, up_rss = peak_rss(
        [*cli, "upload", "--once", *common, "--input.dir", str(source), "--uploader.name", "m"],
        tmp_path / "upload.log",
    )
    assert up_rc == 0, (tmp_path / "upload.log").read_text()[-3000:]
    down_rc, down_rss = peak_rss(
        [*cli, "download", *common, "--output.dir", str(out), "--idle.exit.ms", "4000"],
        tmp_path / "download.log",
    )
    assert down_rc == 0, (tmp_path / "download.log").read_text()[-3000:]
    rebuilt = out / "m" / "one-gib.bin"
    assert rebuilt.stat().st_size == FILE_BYTES
    with big.open("rb") as a, rebuilt.open("rb") as b:
        while block := a.read(8 << 20):
            assert block == b.read(len(block))
    assert up_rss < RSS_BOUND, f"uploader peak RSS {up_rss / 2**20:.0f} MiB"
    assert down_rss < RSS_BOUND, f"downloader peak RSS {down_rss / 2**20:.0f} MiB"
