"""Defects 10 and 11: files whose names cannot be sent are reported, never lost.

A name that is not valid UTF-8 must not hang the uploader; names the protocol forbids
(backslash, control characters, more than 128 components) are reported by `upload --once`
(exit 6) and never deleted by after.upload; an NFD name is sent under its NFC form.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from defect_runs import Cli, content, error_lines

from harness import create_topic, explain

pytestmark = pytest.mark.kafka


def test_name_that_is_not_utf8_is_reported_not_hung(cli: Cli, tmp_path: Path) -> None:
    """Defect 10: next to a good file, a file whose name is not valid UTF-8: `upload --once`
    exits 6 within 60 s naming it (today it hangs), and the good file is delivered."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "good.txt").write_text("good\n")
    fd = os.open(os.fsencode(source) + b"/not-utf8-\xff.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"bad name\n")
    os.close(fd)

    up = cli.upload(source, timeout=60)
    assert up.returncode == 6, explain(up)
    assert "not-utf8-" in up.stderr, explain(up)
    assert len(error_lines(up.stderr)) == 1, explain(up)
    assert os.path.exists(os.fsencode(source) + b"/not-utf8-\xff.txt")

    out = tmp_path / "out"
    down = cli.download(out)
    assert content(out / "up1" / "good.txt") == b"good\n", explain(down)
    assert down.returncode == 0, explain(down)


def test_unsendable_names_are_reported_and_kept(cli: Cli, tmp_path: Path) -> None:
    """Defect 11: with after.upload=delete, files named with a backslash, with a control
    character, and 130 path components deep, are still in input.dir after `upload --once`,
    which exits 6 naming them; an NFD-named file is delivered under its NFC name, and a
    plain file is delivered."""
    create_topic(cli.bootstrap, cli.topic)
    source = tmp_path / "in"
    deep = source.joinpath(*(f"d{i}" for i in range(129)))
    deep.mkdir(parents=True)
    unsendable = [
        source / "back\\slash.txt",
        source / "bell\x07.txt",
        deep / "deep-leaf.txt",
    ]
    for path in unsendable:
        path.write_text("must not be lost\n")
    (source / "plain.txt").write_text("plain\n")
    (source / "cafe\u0301.txt").write_text("nfd\n")

    up = cli.upload(source, after_upload="delete", timeout=60)
    assert up.returncode == 6, explain(up)
    for stem in ("slash.txt", "bell", "deep-leaf.txt"):
        assert stem in up.stderr, f"{stem!r} not named\n" + explain(up)
    assert len(error_lines(up.stderr)) == 1, explain(up)
    for path in unsendable:
        assert content(path) == b"must not be lost\n", f"{path.name!r} was lost"

    out = tmp_path / "out"
    down = cli.download(out)
    assert content(out / "up1" / "plain.txt") == b"plain\n", explain(down)
    assert content(out / "up1" / "caf\u00e9.txt") == b"nfd\n", explain(down)
    assert sorted(p.name for p in (out / "up1").iterdir()) == ["caf\u00e9.txt", "plain.txt"]
    assert down.returncode == 0, explain(down)
