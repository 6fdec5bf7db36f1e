"""compare_trees: the check used by the demo and the end-to-end tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from streamsend.verify import compare_trees

MTIME = 1_650_000_000_000_000_000


def make(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
        os.utime(path, ns=(MTIME, MTIME))


FILES = {
    "a.txt": b"alpha",
    "dir/b.bin": bytes(range(256)) * 10,
    "dir/sub/c": b"",
    "données/é.txt": b"unicode",
}


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make(src, FILES)
    make(dst, FILES)
    return src, dst


def test_identical_trees(trees: tuple[Path, Path]) -> None:
    assert compare_trees(*trees) == []


def test_empty_trees(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert compare_trees(tmp_path / "a", tmp_path / "b") == []


def test_missing_and_unexpected(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    (dst / "dir" / "b.bin").unlink()
    make(dst, {"extra/new.txt": b"new"})
    assert compare_trees(src, dst) == ["missing: dir/b.bin", "unexpected: extra/new.txt"]


def test_empty_directories_do_not_count(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    (dst / "empty" / "deeper").mkdir(parents=True)
    assert compare_trees(src, dst) == []


@pytest.mark.parametrize("change", [b"alphA", b"alph", b"alpha!", b""])
def test_content_differs(trees: tuple[Path, Path], change: bytes) -> None:
    src, dst = trees
    make(dst, {"a.txt": change})
    assert compare_trees(src, dst) == ["content differs: a.txt"]


def test_same_size_same_mtime_different_content_is_found(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    data = bytearray(FILES["dir/b.bin"])
    data[1234] ^= 0xFF
    make(dst, {"dir/b.bin": bytes(data)})
    assert compare_trees(src, dst) == ["content differs: dir/b.bin"]


def test_mtime_differs(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    os.utime(dst / "dir" / "sub" / "c", ns=(MTIME, MTIME + 1))
    assert compare_trees(src, dst) == ["mtime differs: dir/sub/c"]
    assert compare_trees(src, dst, check_metadata=False) == []


def test_mode_differs(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    (dst / "a.txt").chmod(0o600)
    assert compare_trees(src, dst) == ["mode differs: a.txt 644 != 600"]
    assert compare_trees(src, dst, check_metadata=False) == []


def test_content_difference_is_reported_once(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    make(dst, {"a.txt": b"other"})
    os.utime(dst / "a.txt", ns=(MTIME, MTIME + 5))
    (dst / "a.txt").chmod(0o600)
    assert compare_trees(src, dst) == ["content differs: a.txt"]


def test_hidden_files_and_directories_are_ignored(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    make(dst, {".streamsend/staging/x.part": b"x", ".hidden": b"h", "dir/.tmp": b"t"})
    make(src, {".git/config": b"c"})
    assert compare_trees(src, dst) == []


def test_several_problems_are_sorted(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make(src, {"z": b"1", "a": b"1", "m": b"1"})
    shutil.copytree(src, dst)
    (dst / "z").unlink()
    (dst / "a").unlink()
    make(dst, {"m": b"2", "b": b"x"})
    assert compare_trees(src, dst) == [
        "missing: a",
        "missing: z",
        "unexpected: b",
        "content differs: m",
    ]
