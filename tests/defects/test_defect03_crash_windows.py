"""Defect 3: a downloader killed between two durable steps of a delivery recovers on
restart: the file is right at its final path once, nothing is rejected or left staged.

The kill is deterministic: ``crashing_cli.py`` runs the CLI and SIGKILLs it right after
a chosen filesystem call. The file has two chunks, and the first is already staged and
checkpointed by an earlier run (which exited incomplete), as happens when a file's
chunks straddle a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest
from defect_runs import Cli, Run, content, rejected, staged
from records import Transfer, produce

from harness import create_topic, explain

pytestmark = pytest.mark.kafka

KILLED = -signal.SIGKILL
SLOTS = 24  # at most this many crash points are tried (sampled evenly beyond that)


def _stage_first_chunk(cli: Cli, out: Path) -> Transfer:
    """Produce chunk 0 and let a downloader stage it and exit incomplete; then produce
    chunk 1 and the end record, for the next run to deliver."""
    create_topic(cli.bootstrap, cli.topic)
    file = Transfer("up1", "dir/two.bin", os.urandom(8192), chunk_size=4096)
    produce(cli.bootstrap, cli.topic, [file.chunk(0)])
    first = cli.download(out)
    assert first.returncode == 6, explain(first)
    produce(cli.bootstrap, cli.topic, [file.chunk(1), file.end()])
    return file


def _recovered(cli: Cli, out: Path, file: Transfer, story: str) -> None:
    """A normal restart ends with the file delivered once and nothing left behind."""
    cli.wrapped, cli.env = False, {}
    again = cli.download(out, idle_ms=3000)
    final = out / "up1" / "dir" / "two.bin"
    assert content(final) == file.data, story + explain(again)
    assert rejected(out) == [], f"rejected after the restart: {rejected(out)}\n" + story
    assert staged(out) == [], f"left in staging: {staged(out)}\n" + story
    assert again.returncode == 0, story + explain(again)


def _crash(cli: Cli, out: Path, log: Path, after: str, nth: int = 1) -> Run:
    cli.wrapped = True
    cli.env = {"CRASH_AFTER": after, "CRASH_NTH": str(nth), "DURABLE_LOG": str(log)}
    return cli.download(out, idle_ms=3000)


def test_killed_right_after_the_delivery_rename(cli: Cli, tmp_path: Path) -> None:
    """Defect 3: the downloader is SIGKILLed right after the rename that delivers the file
    (source `<transfer>.part`); a normal restart exits 0 with the file right at its final
    path, nothing in .streamsend/rejected/ and nothing left in .streamsend/staging/."""
    out, log = tmp_path / "out", tmp_path / "durable.log"
    file = _stage_first_chunk(cli, out)

    crashed = _crash(cli, out, log, "rename,replace:.part")
    story = f"--- calls of the killed run ---\n{log.read_text()}\n"
    assert crashed.returncode == KILLED, "the delivery rename never happened\n" + explain(crashed)
    assert content(out / "up1" / "dir" / "two.bin") == file.data, story
    _recovered(cli, out, file, story)


@pytest.fixture(scope="module")
def staged_once(
    warm_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Transfer, list[str]]:
    """One topic and one output.dir with chunk 0 staged (copied for every crash point),
    and the durable calls a normal delivery run makes from there."""
    work = tmp_path_factory.mktemp("crash-points")
    cli = Cli(warm_broker, f"defects-crash-points-{uuid.uuid4().hex[:10]}", work)
    base = work / "base"
    file = _stage_first_chunk(cli, base)
    counted, log = work / "counted", work / "count.log"
    shutil.copytree(base, counted, symlinks=True)
    cli.wrapped, cli.env = True, {"DURABLE_LOG": str(log)}
    normal = cli.download(counted)
    assert normal.returncode == 0, explain(normal)
    assert content(counted / "up1" / "dir" / "two.bin") == file.data, explain(normal)
    calls = log.read_text().splitlines()
    assert calls, "the wrapper saw no durable call"
    return cli.topic, base, file, calls


def _crash_points(count: int) -> list[int]:
    if count <= SLOTS:
        return list(range(1, count + 1))
    return sorted({round(1 + i * (count - 1) / (SLOTS - 1)) for i in range(SLOTS)})


@pytest.mark.slow
def test_killed_after_every_durable_call(
    staged_once: tuple[str, Path, Transfer, list[str]],
    warm_broker: str,
    tmp_path: Path,
) -> None:
    """Defect 3: for every durable call (rename, replace, fsync, unlink, pwrite...) a normal
    delivery run makes (sampled evenly when there are more than SLOTS), a downloader
    SIGKILLed right after that call is followed by a normal restart that exits 0 with the
    file right at its final path (never a partial file there, not even right after the
    kill), nothing rejected and nothing left staged."""
    topic, base, file, calls = staged_once
    for n in _crash_points(len(calls)):
        out, log = tmp_path / f"out-{n}", tmp_path / f"durable-{n}.log"
        shutil.copytree(base, out, symlinks=True)
        cli = Cli(warm_broker, topic, tmp_path / f"run-{n}")
        crashed = _crash(cli, out, log, "*", nth=n)
        story = f"killed after call {n} of {len(calls)} ({calls[n - 1]})\n{log.read_text()}\n"
        assert crashed.returncode in (KILLED, 0), story + explain(crashed)
        final = content(out / "up1" / "dir" / "two.bin")
        assert final in (None, file.data), "a wrong file at the final path\n" + story
        _recovered(cli, out, file, story)
