"""A write in progress when the uploader opens a file changes its bytes but not its
metadata: a write call sets mtime and ctime when it starts, not when it ends. The
uploader must not send the mixture of two versions it may read then (test_e2e_torn
caught it under load, once inotify picked files up within a millisecond of a write)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from test_upload_support import CHUNK, complete, run_once, uploader_settings, write

from streamsend.errors import TransferIncomplete
from streamsend.transport.memory import MemoryBroker
from streamsend.upload import service

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("size", [3 * CHUNK, CHUNK // 2])  # chunked, and packed
def test_bytes_that_change_under_unchanged_metadata_are_never_sent_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    source = tmp_path / "in"
    old, new = b"a" * size, b"b" * size
    write(source / "busy.bin", old, age=0)  # just written: its writer may still be at work
    real_pread = os.pread
    reads = 0

    def pread_while_a_write_lands(fd: int, n: int, offset: int) -> bytes:
        """The first read sees the old bytes; then the write in progress completes."""
        nonlocal reads
        data = real_pread(fd, n, offset)
        reads += 1
        if reads == 1:
            stat = os.stat(source / "busy.bin")
            (source / "busy.bin").write_bytes(new)
            # What the uploader sees of the metadata does not change (set at the start).
            os.utime(source / "busy.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return data

    frozen_ctime = os.stat(source / "busy.bin").st_ctime_ns

    def identity(st: os.stat_result) -> tuple[int, int, int, int]:
        return (st.st_size, st.st_mtime_ns, st.st_ino, frozen_ctime)

    monkeypatch.setattr(service.os, "pread", pread_while_a_write_lands)
    monkeypatch.setattr(service, "identity", identity)
    broker = MemoryBroker()
    settings = uploader_settings(source, **{"file.minimum.age.ms": "0"})
    if size < CHUNK:
        settings = uploader_settings(
            source, **{"file.minimum.age.ms": "0", "pack.file.max.bytes": str(CHUNK)}
        )
    with contextlib.suppress(TransferIncomplete):  # not sent this time is fine; mixed is not
        run_once(settings, broker)
    sent = complete(broker, "busy.bin")
    assert all(content in (old, new) for content in sent), [c[:8] for c in sent]
