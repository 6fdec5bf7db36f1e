"""Defect 5: disk space. An abandoned transfer must not block the disk for ever, ENOSPC
from fsync is a full disk (pause), not a crash, staging is capped per uploader and by the
filesystem's size, and rejected files are cleaned up by age."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from defect_runs import Cli, Run, content, rejected, staged
from records import Transfer, chunk, end, new_transfer_id, produce

from harness import create_topic, explain, tmpfs

pytestmark = pytest.mark.kafka

KIB = 1024


def refusals(run: Run, topic: str) -> list[str]:
    """Log lines that refuse something: not librdkafka's "Connection refused", and not the
    topic's name (made from the test's name)."""
    lines = (line.replace(topic, "<topic>").lower() for line in run.stderr.splitlines())
    return [line for line in lines if "refus" in line and "connection refused" not in line]


def test_abandoned_transfer_expires_while_the_disk_is_full(cli: Cli, tmp_path: Path) -> None:
    """Defect 5: (a) output.dir is a 4 MiB filesystem; a transfer whose uploader died
    half-way (3 MiB of chunks, no end) fills most of it. With partial.file.expiry.ms=2000
    a genuine 2 MiB file that needs that space is still delivered within a minute: the
    downloader, paused on the full disk, expires the abandoned transfer."""
    create_topic(cli.bootstrap, cli.topic)
    piece = 512 * KIB
    dead = new_transfer_id()
    dead_size = 7 * piece
    blob = os.urandom(piece)
    abandoned = [chunk(dead, "dead", "half.bin", i, i * piece, dead_size, blob) for i in range(6)]
    genuine = Transfer("up1", "needs-room.bin", os.urandom(4 * piece), chunk_size=piece)
    produce(cli.bootstrap, cli.topic, [*abandoned, *genuine.records()])

    with tmpfs(tmp_path / "small", "size=4m") as mount:
        out = mount / "out"
        down = cli.download(out, timeout=60, partial_file_expiry_ms="2000")
        assert content(out / "up1" / "needs-room.bin") == genuine.data, explain(down)
        assert down.returncode == 0, explain(down)
        assert staged(out) == [], staged(out)


def test_enospc_from_fsync_pauses_instead_of_crashing(cli: Cli, tmp_path: Path) -> None:
    """Defect 5: (b) the first fsync fails with ENOSPC (injected once): the downloader does
    not crash; it pauses, retries, delivers the file and exits 0."""
    create_topic(cli.bootstrap, cli.topic)
    file = Transfer("up1", "synced.bin", os.urandom(20 * KIB))
    produce(cli.bootstrap, cli.topic, file.records())
    cli.wrapped = True
    cli.env = {"FAIL_ONCE": "fsync,fdatasync:ENOSPC"}

    out = tmp_path / "out"
    down = cli.download(out, timeout=60)
    assert "Traceback" not in down.stderr, explain(down)
    assert down.returncode == 0, explain(down)
    assert content(out / "up1" / "synced.bin") == file.data, explain(down)


def test_declared_size_beyond_the_filesystem_is_not_staged(cli: Cli, tmp_path: Path) -> None:
    """Defect 5: (c) a chunk declaring a 512 TiB file (within the protocol's 1 PiB bound, far
    beyond the output filesystem) is refused: nothing of it stays in staging, a log line
    says so, and a genuine file sent after it is delivered."""
    out = tmp_path / "out"
    st = os.statvfs(tmp_path)
    if st.f_blocks * st.f_frsize >= 2**49:
        pytest.skip("the output filesystem is larger than 512 TiB")
    create_topic(cli.bootstrap, cli.topic)
    huge = new_transfer_id()
    genuine = Transfer("up1", "normal.txt", b"normal\n")
    records = [chunk(huge, "up1", "huge.bin", 0, 0, 2**49, b"x" * 100), *genuine.records()]
    produce(cli.bootstrap, cli.topic, records)

    down = cli.download(out)
    assert content(out / "up1" / "normal.txt") == genuine.data, explain(down)
    assert down.returncode in (0, 6), explain(down)
    assert "Traceback" not in down.stderr, explain(down)
    assert refusals(down, cli.topic), "no log line refuses the 512 TiB transfer\n" + explain(down)
    assert f"{huge}.part" not in staged(out), staged(out)


def test_unfinished_transfers_per_uploader_are_capped(cli: Cli, tmp_path: Path) -> None:
    """Defect 5: (d) with staging.max.transfers.per.uploader=3, a 4th concurrent unfinished
    transfer from one uploader is refused (a log line says so, nothing staged for it),
    the first three stay staged, and another uploader's file is delivered."""
    create_topic(cli.bootstrap, cli.topic)
    greedy = [Transfer("greedy", f"g{i}.bin", os.urandom(2 * KIB), KIB) for i in range(4)]
    other = Transfer("other", "fine.txt", b"fine\n")
    produce(cli.bootstrap, cli.topic, [*(t.chunk(0) for t in greedy), *other.records()])

    out = tmp_path / "out"
    down = cli.download(out, staging_max_transfers_per_uploader="3")
    assert content(out / "other" / "fine.txt") == other.data, explain(down)
    assert down.returncode == 6, explain(down)
    assert refusals(down, cli.topic), "no log line refuses the 4th transfer\n" + explain(down)
    names = staged(out)
    assert [f"{t.transfer}.part" in names for t in greedy] == [True, True, True, False], names


def test_default_cap_is_a_thousand_unfinished_transfers_per_uploader(
    cli: Cli, tmp_path: Path
) -> None:
    """Defect 5: (d) by default (staging.max.transfers.per.uploader=1000) the 1,001st
    concurrent unfinished transfer of one uploader is refused, and another uploader's file
    is still delivered."""
    create_topic(cli.bootstrap, cli.topic)
    greedy = [new_transfer_id() for _ in range(1001)]
    firsts = [
        chunk(t, "greedy", f"g{i}.bin", 0, 0, 20, b"0123456789") for i, t in enumerate(greedy)
    ]
    other = Transfer("other", "fine.txt", b"fine\n")
    produce(cli.bootstrap, cli.topic, [*firsts, *other.records()])

    out = tmp_path / "out"
    down = cli.download(out)
    assert content(out / "other" / "fine.txt") == other.data, explain(down)
    assert down.returncode == 6, explain(down)
    assert refusals(down, cli.topic), "no log line refuses the 1,001st transfer\n" + explain(down)
    names = set(staged(out))
    assert f"{greedy[-1]}.part" not in names
    assert all(f"{t}.part" in names for t in greedy[:-1]), "one of the first 1,000 is not staged"


def test_rejected_files_are_removed_after_their_retention(cli: Cli, tmp_path: Path) -> None:
    """Defect 5: (e) a file rejected for a bad SHA-256 is kept in .streamsend/rejected/, and
    removed by a later run once rejected.retention.ms has passed."""
    create_topic(cli.bootstrap, cli.topic)
    tid = new_transfer_id()
    data = b"tampered\n"
    bad = hashlib.sha256(b"something else").hexdigest()
    tampered = [chunk(tid, "up1", "bad.txt", 0, 0, 9, data), end(tid, "up1", "bad.txt", 9, 1, bad)]
    produce(cli.bootstrap, cli.topic, tampered)
    out = tmp_path / "out"
    first = cli.download(out)
    assert first.returncode == 0, explain(first)
    assert f"{tid}.data" in rejected(out), explain(first)
    assert not (out / "up1" / "bad.txt").exists()

    time.sleep(2)
    second = cli.download(out, rejected_retention_ms="1000")
    assert second.returncode == 0, explain(second)
    left = [name for name in rejected(out) if name.startswith(tid)]
    assert left == [], f"still in .streamsend/rejected/: {left}\n" + explain(second)
