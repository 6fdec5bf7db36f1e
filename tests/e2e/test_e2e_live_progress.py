"""Live progress (issue 10): a rich display on a terminal, none without one or with
--quiet, and the summary line of bounded runs in every mode. Real broker; the commands'
stderr is a pseudo-terminal where a terminal is wanted."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from defects.records import chunk, new_transfer_id, produce
from harness import Pipeline, create_topic, write_random

pytestmark = pytest.mark.kafka

MARKUP_NAME = "[blink]not markup[/blink].bin"  # a legal name that rich must not parse
FORGED = "esc\x1b]0;pwned\x07\x1b[2Jname.bin"  # refused by the downloader, logged escaped
SUMMARY = re.compile(r"\d+ files?, [\d.]+ MiB in [\d.]+ s \([\d.]+ MiB/s\)")
ANSI = re.compile(rb"\x1b[\[\]]")


def in_pty(cmd: list[str], timeout: float = 120) -> tuple[int, bytes]:
    """Run ``cmd`` with stderr on a pseudo-terminal (120 columns); its output."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
    return proc.wait(timeout), bytes(out)


def _commands(pipe: Pipeline, src: Path, out: Path, *extra: str) -> tuple[list[str], list[str]]:
    up = pipe._command(
        "upload",
        {"input.dir": str(src), "uploader.name": "up1", "file.minimum.age.ms": "0"},
        ["--once", *extra],
    )
    down = pipe._command("download", {"output.dir": str(out), "idle.exit.ms": "3000"}, extra)
    return up, down


def _files(src: Path) -> None:
    src.mkdir()
    write_random(src / "big.bin", 6 << 20)
    write_random(src / MARKUP_NAME, 3 << 20, seed=1)


def test_live_display_on_a_terminal(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    src, out = tmp_path / "src", tmp_path / "out"
    _files(src)
    forged = chunk(new_transfer_id(), "up1", FORGED, 0, 0, 4, b"data")
    produce(pipeline.bootstrap, pipeline.topic, [forged])
    up_cmd, down_cmd = _commands(pipeline, src, out, "--binary.chunk.size.bytes", "65536")
    code, up = in_pty(up_cmd)
    text = up.decode(errors="replace")
    assert code == 0, text
    assert "overall:" in text and "MiB/s" in text, text  # the display's rows
    assert MARKUP_NAME in text, text  # shown as it is, not parsed as markup
    assert re.search(SUMMARY.pattern + ", all acknowledged", text), text
    assert "sent 'big.bin'" in text, text  # log lines still appear

    code, down = in_pty(down_cmd)
    text = down.decode(errors="replace")
    assert code == 0, text
    assert "overall: 2 files done" in text, text
    assert f"up1/{MARKUP_NAME}" in text, text
    # The forged name reaches the terminal escaped only: no raw OSC, BEL or clear-screen.
    assert b"\x1b]0;" not in down and b"\x07" not in down and b"\x1b[2J" not in down, down
    assert re.search(SUMMARY.pattern + ", all verified", text), text
    assert (out / "up1" / MARKUP_NAME).read_bytes() == (src / MARKUP_NAME).read_bytes()


def test_no_animation_without_a_terminal_or_with_quiet(pipeline: Pipeline, tmp_path: Path) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic)
    src, out = tmp_path / "src", tmp_path / "out"
    _files(src)
    up_cmd, down_cmd = _commands(pipeline, src, out)
    for cmd in (up_cmd, down_cmd):
        done = subprocess.run(cmd, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert not ANSI.search(done.stderr), done.stderr  # no escape sequence at all
        assert "overall:" not in done.stderr.decode()
        assert SUMMARY.search(done.stderr.decode()), done.stderr
        if cmd is up_cmd:  # today's line, unchanged
            assert b"done: 2 file(s), 9.0 MiB in " in done.stderr, done.stderr

    quiet = tmp_path / "quiet"
    code, raw = in_pty([*_commands(pipeline, src, quiet, "--quiet")[1]])
    assert code == 0, raw
    assert not ANSI.search(raw), raw  # a terminal, but --quiet: log lines only
    assert SUMMARY.search(raw.decode()), raw
