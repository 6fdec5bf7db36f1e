"""Compare a source tree with its rebuilt copy: content, size, mtime and permissions.

Used by ``streamsend demo`` and by the end-to-end tests, so both check the same way.
"""

from __future__ import annotations

import filecmp
import os
import stat
from pathlib import Path


def _files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = path
    return found


def compare_trees(source: Path, copy: Path, check_metadata: bool = True) -> list[str]:
    """Differences between two trees, as readable lines; empty when identical."""
    src, dst = _files(source), _files(copy)
    problems = [f"missing: {name}" for name in sorted(src.keys() - dst.keys())]
    problems += [f"unexpected: {name}" for name in sorted(dst.keys() - src.keys())]
    for name in sorted(src.keys() & dst.keys()):
        a, b = src[name], dst[name]
        if not filecmp.cmp(a, b, shallow=False):
            problems.append(f"content differs: {name}")
            continue
        if check_metadata:
            sa, sb = a.stat(), b.stat()
            if sa.st_mtime_ns != sb.st_mtime_ns:
                problems.append(f"mtime differs: {name}")
            if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
                problems.append(
                    f"mode differs: {name} {stat.S_IMODE(sa.st_mode):o} != "
                    f"{stat.S_IMODE(sb.st_mode):o}"
                )
    return problems
