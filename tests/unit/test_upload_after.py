"""after.upload acts only on the version that was sent (defect 9)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from test_upload_support import (
    CHUNK,
    complete,
    payload,
    run_once,
    uploader_settings,
    write,
)

from streamsend.transport.memory import MemoryBroker

OLD = payload(3 * CHUNK, seed=1)
NEW = payload(3 * CHUNK, seed=2)  # same size


def replace_by_rename(path: Path) -> None:
    """What most writers do: write a temporary file, rename it over the old one."""
    tmp = path.with_name(".tmp")
    write(tmp, NEW, age=7200)
    tmp.rename(path)


def rewrite_in_place(path: Path) -> None:
    """Same inode, same size, and the old modification time restored (cp -p, rsync -t):
    only the change time tells."""
    st = path.stat()
    path.write_bytes(NEW)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("action", ["rename", "delete"])
@pytest.mark.parametrize("change", [replace_by_rename, rewrite_in_place])
def test_after_upload_spares_a_file_replaced_before_the_acknowledgement(
    tmp_path: Path, action: str, change: object, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", OLD)
    changed = []

    def on_step(step: str) -> None:
        # A writer replaces the file after its last read, before the acknowledgements.
        if step == "ack" and not changed:
            changed.append(True)
            change(source / "a.bin")  # type: ignore[operator]

    broker = MemoryBroker(faults=on_step)
    settings = uploader_settings(source, **{"after.upload": action})
    caplog.set_level(logging.INFO)
    run_once(settings, broker)
    assert changed
    assert complete(broker, "a.bin") == [OLD]
    # The version nobody sent is still there, under its name.
    assert (source / "a.bin").read_bytes() == NEW
    assert not (source / "a.bin.FINISHED").exists()
    assert "'a.bin' changed after it was read" in caplog.text

    # A later scan sends the new version, and only then acts on it.
    broker.faults = lambda _step: None
    run_once(settings, broker)
    assert complete(broker, "a.bin") == [OLD, NEW]
    assert not (source / "a.bin").exists()
    assert (source / "a.bin.FINISHED").exists() == (action == "rename")
