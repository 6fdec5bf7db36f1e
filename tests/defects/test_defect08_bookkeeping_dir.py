"""Defect 8: the downloader's bookkeeping directory (output.dir/.streamsend) is created
private and never followed through a symlink or used when someone else owns it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from defect_runs import Cli, Run, content, error_lines
from records import Transfer, produce

from harness import create_topic, explain

pytestmark = pytest.mark.kafka


def _topic_with_a_file(cli: Cli) -> Transfer:
    create_topic(cli.bootstrap, cli.topic)
    file = Transfer("up1", "f.txt", b"hello\n")
    produce(cli.bootstrap, cli.topic, file.records())
    return file


def _refused_with_one_line(down: Run) -> None:
    assert down.returncode == 3, explain(down)
    assert len(error_lines(down.stderr)) == 1, explain(down)
    assert "Traceback" not in down.stderr, explain(down)


def _untouched(directory: Path, mtime_ns: int) -> None:
    assert list(directory.iterdir()) == [], list(directory.iterdir())
    # A directory's mtime changes when an entry is created or removed in it: this also
    # catches a probe file written through the link and deleted again.
    assert directory.stat().st_mtime_ns == mtime_ns, f"something was written into {directory}"


def test_bookkeeping_dir_that_is_a_symlink_is_refused(cli: Cli, tmp_path: Path) -> None:
    """Defect 8: (a) output.dir/.streamsend is a symlink to another directory: the downloader
    exits 3 with one error line and writes nothing into the symlink's target."""
    _topic_with_a_file(cli)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / ".streamsend").symlink_to(elsewhere)
    before = elsewhere.stat().st_mtime_ns

    down = cli.download(out)
    _untouched(elsewhere, before)
    _refused_with_one_line(down)


def test_staging_dir_that_is_a_symlink_is_never_written_through(cli: Cli, tmp_path: Path) -> None:
    """Defect 8: (b) output.dir/.streamsend/staging is a symlink to another directory: the
    downloader either refuses (exit 3, one line) or works without ever writing through the
    link (then the file on the topic is delivered); never a crash."""
    file = _topic_with_a_file(cli)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / ".streamsend").mkdir(parents=True)
    elsewhere.mkdir()
    (out / ".streamsend" / "staging").symlink_to(elsewhere)
    before = elsewhere.stat().st_mtime_ns

    down = cli.download(out)
    _untouched(elsewhere, before)
    if down.returncode == 3:
        _refused_with_one_line(down)
    else:
        assert down.returncode == 0, explain(down)
        assert content(out / "up1" / "f.txt") == file.data, explain(down)


def test_bookkeeping_dir_is_private(cli: Cli, tmp_path: Path) -> None:
    """Defect 8: (c) after a normal run, output.dir/.streamsend has mode 0700."""
    file = _topic_with_a_file(cli)
    out = tmp_path / "out"
    down = cli.download(out)
    assert down.returncode == 0, explain(down)
    assert content(out / "up1" / "f.txt") == file.data, explain(down)
    mode = stat.S_IMODE((out / ".streamsend").stat().st_mode)
    assert mode == 0o700, f"output.dir/.streamsend has mode {mode:o}"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_bookkeeping_dir_owned_by_another_user_is_refused(cli: Cli, tmp_path: Path) -> None:
    """Defect 8: (d) output.dir/.streamsend belongs to another user (uid 65534): the downloader
    exits 3 with one error line instead of using it."""
    _topic_with_a_file(cli)
    out = tmp_path / "out"
    (out / ".streamsend").mkdir(parents=True, mode=0o700)
    os.chown(out / ".streamsend", 65534, 65534)

    down = cli.download(out)
    _refused_with_one_line(down)
    assert not (out / "up1" / "f.txt").exists()
