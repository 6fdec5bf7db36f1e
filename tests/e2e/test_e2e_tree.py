"""A whole awkward tree streamed through the real broker and rebuilt byte for byte."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness import Pipeline, age, explain, write_random
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka

CHUNK = 1 << 20


def build_tree(root: Path) -> None:
    files: dict[str, int] = {
        "empty": 0,
        "one-byte": 1,
        "exactly-one-chunk.bin": CHUNK,
        "one-chunk-plus-one.bin": CHUNK + 1,
        "big/fifty-mib.bin": 50 * 2**20,
        "name with spaces.txt": 1234,
        "données/日本語/ファイル.dat": 4321,
        "a/b/c/d/e/f/deep.bin": 70_000,
    }
    for i, (relative, size) in enumerate(files.items()):
        write_random(root / relative, size, seed=i)
    (root / "one-byte").chmod(0o640)
    (root / "a/b/c/d/e/f/deep.bin").chmod(0o755)
    for path in root.rglob("*"):
        if path.is_file():
            age(path)


def test_tree_round_trip_preserves_bytes_and_metadata(pipeline: Pipeline, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    build_tree(source)
    up = pipeline.upload(source, binary_chunk_size_bytes=str(CHUNK))
    assert up.returncode == 0, explain(up)
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert compare_trees(source, out / "up1") == []
    # Nothing but delivered files and our own hidden bookkeeping in output.dir.
    assert sorted(p.name for p in out.iterdir()) == [".streamsend", "up1"]
    assert not list((out / ".streamsend" / "staging").iterdir())


def test_skipped_files_are_not_sent(pipeline: Pipeline, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    for name in ["keep.csv", ".hidden.csv", "x.csv.PROCESSING", "y.csv.FINISHED", "no.txt"]:
        write_random(source / name, 10)
    write_random(source / ".hiddendir" / "inner.csv", 10)
    outside = write_random(tmp_path / "outside.csv", 10)
    os.symlink(outside, source / "link.csv")
    for path in source.rglob("*"):
        if path.is_file() and not path.is_symlink():
            age(path)
    up = pipeline.upload(source, input_file_pattern=r".*\.csv")
    assert up.returncode == 0, explain(up)
    down = pipeline.download(out)
    assert down.returncode == 0, explain(down)
    assert sorted(p.name for p in (out / "up1").rglob("*")) == ["keep.csv"]


def test_automatic_chunk_size_is_logged(pipeline: Pipeline, tmp_path: Path) -> None:
    source = tmp_path / "in"
    write_random(source / "f.bin", 3 * 2**20)
    age(source / "f.bin")
    up = pipeline.upload(source)
    assert up.returncode == 0, explain(up)
    match = re.search(r"Automatic configuration of a chunk size of (\d+) bytes", up.stderr)
    assert match, up.stderr
    assert int(match.group(1)) > 1_000_000  # the local broker allows 8 MiB messages
