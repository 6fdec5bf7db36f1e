"""The downloader service driven by the in-memory transport: fast, deterministic tests of
what it does with records (forged, interleaved, abandoned, refused) and with a disk that
fills up. The same behaviours are tested end to end on the real broker in tests/defects/."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamsend.cli import _EscapingFormatter
from streamsend.config.loader import resolve
from streamsend.config.settings import DownloaderSettings
from streamsend.download.service import Downloader, default_group_id, default_instance_id
from streamsend.errors import TransferIncomplete
from streamsend.transport.memory import MemoryBroker, MemoryTransport
from streamsend.wire.protocol import Abort, Chunk, End, Message, encode

TOPIC = "files"
MTIME = 1_700_000_000_000_000_000


def tid(n: int) -> str:
    return f"{n:032x}"


def whole(t: str, path: str, data: bytes, uploader: str = "up") -> list[Message]:
    sha = hashlib.sha256(data).hexdigest()
    chunk = [Chunk(t, uploader, path, 0, 0, len(data), data)] if data else []
    return [*chunk, End(t, uploader, path, len(data), len(chunk), sha, MTIME, 0o644)]


def produce(broker: MemoryBroker, messages: list[Message], topic: str = TOPIC) -> None:
    for message in messages:
        key, headers, value = encode(message)
        broker.append(topic, key, headers, value)


def run(
    out: Path,
    broker: MemoryBroker,
    faults: Callable[[str], None] | None = None,
    topic: str = TOPIC,
    **props: str,
) -> Downloader:
    flags = {
        "bootstrap.servers": "memory",
        "topic": topic,
        "output.dir": str(out),
        "idle.exit.ms": "100",
        **{k.replace("_", "."): v for k, v in props.items()},
    }
    settings = resolve(DownloaderSettings, environ={}, flags=flags)
    d = Downloader(settings, MemoryTransport(broker), **({"faults": faults} if faults else {}))
    with contextlib.suppress(TransferIncomplete):  # runs that end with files unfinished
        d.run()
    return d


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


def staged(out: Path) -> list[str]:
    return sorted(os.listdir(out / ".streamsend" / "staging"))


# -- defect 1: integrity -----------------------------------------------------------


def test_forged_overlapping_chunk_never_delivers_other_bytes(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    genuine = bytes(range(20))
    forged = b"\xff" * 6
    t = tid(1)
    sha = hashlib.sha256(genuine).hexdigest()
    produce(
        broker,
        [
            Chunk(t, "up", "f.bin", 0, 0, 20, genuine[:10]),
            Chunk(t, "up", "f.bin", 9, 5, 20, forged),  # [5, 11) between the genuine two
            Chunk(t, "up", "f.bin", 1, 10, 20, genuine[10:]),
            End(t, "up", "f.bin", 20, 2, sha, MTIME, 0o644),
        ],
    )
    out = tmp_path / "out"
    d = run(out, broker)
    final = out / "up" / "f.bin"
    # The forged byte 10 was written first and is never overwritten: the file fails
    # verification and is kept aside, never delivered under the genuine hash.
    assert not final.exists()
    assert d.stats.rejected == 1 and d.stats.delivered == 0
    kept = (out / ".streamsend" / "rejected" / f"{t}.data").read_bytes()
    assert kept == genuine[:10] + b"\xff" + genuine[11:]


def test_overlap_with_the_same_bytes_is_delivered(broker: MemoryBroker, tmp_path: Path) -> None:
    data = os.urandom(3000)
    t = tid(2)
    sha = hashlib.sha256(data).hexdigest()
    produce(
        broker,
        [
            Chunk(t, "up", "f.bin", 0, 0, 3000, data[:1200]),
            Chunk(t, "up", "f.bin", 1, 1000, 3000, data[1000:2500]),  # overlaps both sides
            Chunk(t, "up", "f.bin", 2, 2400, 3000, data[2400:]),
            End(t, "up", "f.bin", 3000, 3, sha, MTIME, 0o644),
        ],
    )
    out = tmp_path / "out"
    assert run(out, broker).stats.delivered == 1
    assert (out / "up" / "f.bin").read_bytes() == data


# -- defect 2: descriptors ------------------------------------------------------------


@pytest.fixture
def few_descriptors() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 128
    # On top of what the test process holds already (sockets and files of earlier
    # tests in the same session), so that the downloader is the one that is short.
    already = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit + already, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_unfinished_transfers_than_descriptors(
    broker: MemoryBroker, tmp_path: Path, few_descriptors: int
) -> None:
    unfinished = [
        Chunk(tid(1000 + i), f"shop-{i % 50}", f"in-flight-{i}.bin", 0, 0, 200, b"x" * 100)
        for i in range(3 * few_descriptors)
    ]
    produce(broker, [*unfinished, *whole(tid(1), "genuine.txt", b"arrives anyway")])
    out = tmp_path / "out"
    d = run(out, broker)
    assert (out / "up" / "genuine.txt").read_bytes() == b"arrives anyway"
    assert len(d.transfers) == 3 * few_descriptors
    # A restart reopens nothing up front and still works.
    produce(broker, whole(tid(2), "after-restart.txt", b"too"))
    d = run(out, broker)
    assert (out / "up" / "after-restart.txt").read_bytes() == b"too"
    assert len(staged(out)) == 3 * few_descriptors


# -- defect 4: the end record -------------------------------------------------------


def test_end_record_consumed_before_a_restart_is_kept(broker: MemoryBroker, tmp_path: Path) -> None:
    data = os.urandom(2000)
    t = tid(3)
    sha = hashlib.sha256(data).hexdigest()
    end = End(t, "up", "late.bin", 2000, 2, sha, MTIME, 0o644)
    produce(broker, [end, Chunk(t, "up", "late.bin", 0, 0, 2000, data[:1000])])
    out = tmp_path / "out"
    run(out, broker)  # commits the end record's offset, then exits incomplete
    produce(broker, [Chunk(t, "up", "late.bin", 1, 1000, 2000, data[1000:])])
    assert run(out, broker).stats.delivered == 1
    assert (out / "up" / "late.bin").read_bytes() == data


# -- defect 5: disk full, caps, rejected files ----------------------------------------


def test_enospc_from_fsync_pauses_instead_of_crashing(broker: MemoryBroker, tmp_path: Path) -> None:
    failures = {"fsync": 2}

    def faults(step: str) -> None:
        if failures.get(step):
            failures[step] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")

    produce(broker, whole(tid(4), "f.txt", b"content"))
    out = tmp_path / "out"
    d = run(out, broker, faults=faults)
    assert d.stats.disk_full_pauses == 1
    assert (out / "up" / "f.txt").read_bytes() == b"content"


def test_records_fetched_before_a_pause_are_read_again(tmp_path: Path) -> None:
    """librdkafka may hand over records it fetched before pause(); each partition must be
    rewound to the first of them, not the last (which would skip the others)."""
    data = os.urandom(5000)
    t = tid(9)
    sha = hashlib.sha256(data).hexdigest()
    broker = MemoryBroker()
    chunks = [Chunk(t, "up", "f.bin", i, i * 1000, 5000, data[i * 1000 : (i + 1) * 1000])
              for i in range(5)]  # fmt: skip
    produce(broker, [*chunks, End(t, "up", "f.bin", 5000, 5, sha, MTIME, 0o644)])
    failures = {"write": 3}

    def faults(step: str) -> None:
        if failures.get(step):
            failures[step] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")

    flags = {"bootstrap.servers": "m", "topic": TOPIC, "output.dir": str(tmp_path / "out"),
             "idle.exit.ms": "100"}  # fmt: skip
    settings = resolve(DownloaderSettings, environ={}, flags=flags)
    d = Downloader(settings, MemoryTransport(broker, prefetch=3), faults=faults)
    d.run()
    assert d.stats.disk_full_pauses == 1
    assert (tmp_path / "out" / "up" / "f.bin").read_bytes() == data


def test_a_long_pause_for_disk_space_is_not_idleness(broker: MemoryBroker, tmp_path: Path) -> None:
    """A record that waited for room longer than idle.exit.ms is followed by the rest of
    its file, not by an idle exit (the first poll after resuming finds nothing yet)."""
    data = os.urandom(2000)
    t = tid(11)
    sha = hashlib.sha256(data).hexdigest()
    produce(broker, [Chunk(t, "up", "f.bin", 0, 0, 2000, data[:1000]),
                     Chunk(t, "up", "f.bin", 1, 1000, 2000, data[1000:]),
                     End(t, "up", "f.bin", 2000, 2, sha, MTIME, 0o644)])  # fmt: skip
    failures = {"write": 1}

    def faults(step: str) -> None:
        if failures.get(step):
            failures[step] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out"
    d = run(out, broker, faults=faults, idle_exit_ms="500")
    assert d.stats.disk_full_pauses == 1
    assert (out / "up" / "f.bin").read_bytes() == data


def test_idle_exit_waits_for_the_first_assignment(broker: MemoryBroker, tmp_path: Path) -> None:
    """Joining the group can take longer than idle.exit.ms (a broker just started): the
    idle clock starts at the first assignment, not before."""

    def topic_appears_late() -> None:
        time.sleep(1.0)
        produce(broker, whole(tid(12), "late.txt", b"worth the wait"))

    threading.Thread(target=topic_appears_late, daemon=True).start()
    out = tmp_path / "out"
    d = run(out, broker, idle_exit_ms="300")
    assert d.stats.delivered == 1
    assert (out / "up" / "late.txt").read_bytes() == b"worth the wait"


def test_full_disk_expires_abandoned_transfers_while_paused(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    abandoned = tid(5)

    def faults(step: str) -> None:
        # The disk stays full for as long as the abandoned transfer's bytes are there.
        if step == "write" and (out / ".streamsend" / "staging" / f"{abandoned}.part").exists():
            raise OSError(errno.ENOSPC, "No space left on device")

    produce(broker, [Chunk(abandoned, "dead", "half.bin", 0, 0, 10, b"12345")])
    run(out, broker)
    assert staged(out) == [f"{abandoned}.part"]
    produce(broker, whole(tid(6), "needs-room.txt", b"room please"))
    started = time.monotonic()
    d = run(out, broker, faults=faults, partial_file_expiry_ms="1000")
    assert (out / "up" / "needs-room.txt").read_bytes() == b"room please"
    assert d.stats.expired == 1 and d.stats.disk_full_pauses == 1
    assert time.monotonic() - started < 20


def test_transfer_larger_than_the_filesystem_is_refused(
    broker: MemoryBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    produce(broker, [Chunk(tid(7), "up", "huge.bin", 0, 0, 1 << 49, b"claim")])
    produce(broker, whole(tid(8), "fine.txt", b"fine"))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        d = run(out, broker)
    assert d.stats.refused == 1
    assert staged(out) == []
    assert (
        "refusing 'up/huge.bin'" in caplog.text and "exceeds the output filesystem" in caplog.text
    )
    assert (out / "up" / "fine.txt").read_bytes() == b"fine"


def test_per_uploader_caps(broker: MemoryBroker, tmp_path: Path) -> None:
    produce(broker, [Chunk(tid(10 + i), "greedy", f"f{i}", 0, 0, 100, b"x") for i in range(4)])
    # "big" holds 400 bytes of an unfinished transfer: at the cap, its next one is refused;
    # a declared size far above the cap is no reason by itself (a claim holds no bytes).
    produce(broker, [Chunk(tid(20), "big", "one", 0, 0, 10_000, b"x" * 400)])
    produce(broker, [Chunk(tid(21), "big", "two", 0, 0, 10, b"y")])
    produce(broker, whole(tid(30), "other.txt", b"unaffected", uploader="polite"))
    out = tmp_path / "out"
    d = run(
        out,
        broker,
        staging_max_transfers_per_uploader="3",
        staging_max_bytes_per_uploader="400",
    )
    assert d.stats.refused == 2  # greedy's fourth transfer, big's second
    assert sorted(t.path for t in d.transfers.values()) == ["f0", "f1", "f2", "one"]
    assert (out / "polite" / "other.txt").read_bytes() == b"unaffected"


def test_a_verified_file_waiting_for_delivery_does_not_count_against_the_cap(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    # Records follow each other without a pause, so the first file is still waiting for
    # its delivery round when the second one starts.
    produce(broker, whole(tid(25), "first.bin", b"a" * 400))
    produce(broker, whole(tid(26), "second.bin", b"b" * 400))
    out = tmp_path / "out"
    d = run(out, broker, staging_max_bytes_per_uploader="400")
    assert d.stats.refused == 0
    assert (out / "up" / "second.bin").read_bytes() == b"b" * 400


def test_rejected_files_are_deleted_after_their_retention(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    produce(broker, whole(tid(40), "bad.txt", b"content")[:1])
    produce(broker, [End(tid(40), "up", "bad.txt", 7, 1, "0" * 64, MTIME, 0o644)])
    out = tmp_path / "out"
    run(out, broker)
    rejected = out / ".streamsend" / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [
        f"{tid(40)}.data",
        f"{tid(40)}.reason.json",
    ]
    run(out, broker, rejected_retention_ms="3600000")
    assert len(list(rejected.iterdir())) == 2  # young: kept
    old = time.time() - 7200
    for p in rejected.iterdir():
        os.utime(p, (old, old))
    run(out, broker, rejected_retention_ms="3600000")
    assert list(rejected.iterdir()) == []


# -- defect 6: log forging ------------------------------------------------------------


def test_untrusted_text_cannot_forge_log_lines(broker: MemoryBroker, tmp_path: Path) -> None:
    fake = "2026-11-26 12:00:00,000 INFO    streamsend: delivered '/etc/shadow'"
    produce(
        broker,
        [
            Chunk(tid(50), "up", "a.bin", 0, 0, 10, b"12345"),
            Abort(tid(50), "up", "a.bin", f"changed\n{fake}\r\x1b[2K"),
            *whole(tid(51), "esc\x1b[31mred.txt", b"x"),
        ],
    )
    key, headers, value = encode(Chunk(tid(52), "up", "b.bin", 0, 0, 5, b"12345"))
    produce(broker, [])
    broker.append(TOPIC, key, [*headers, (f"streamsend.path\n{fake}", b"x")], value)
    broker.append(TOPIC, key, [*headers, ("streamsend.path", b"again")], value)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        run(tmp_path / "out", broker)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    assert "/etc/shadow" in text  # it is logged, escaped, inside its own line
    for line in text.splitlines():
        assert not line.startswith("2026-11-26"), line
    assert "\x1b" not in text and "\r" not in text


# -- defect 7: group per topic ---------------------------------------------------------


def test_group_and_static_member_differ_per_topic(tmp_path: Path) -> None:
    assert default_group_id(tmp_path, "a") != default_group_id(tmp_path, "b")
    assert default_instance_id(tmp_path, "a") != default_instance_id(tmp_path, "b")
    assert default_group_id(tmp_path / "x", "a") != default_group_id(tmp_path, "a")


def test_same_output_dir_on_a_new_topic_reads_the_new_topic(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    produce(broker, whole(tid(60), "from-a.txt", b"a"), topic="topic-a")
    produce(broker, whole(tid(61), "from-b.txt", b"b"), topic="topic-b")
    out = tmp_path / "out"
    run(out, broker, topic="topic-a")
    run(out, broker, topic="topic-b")
    assert (out / "up" / "from-b.txt").read_bytes() == b"b"
    groups = {group for group, _topic, _p in broker.committed}
    assert len(groups) == 2


# -- grouping of durable work ---------------------------------------------------------


def test_a_burst_of_small_files_shares_its_fsyncs(broker: MemoryBroker, tmp_path: Path) -> None:
    for i in range(300):
        produce(broker, whole(tid(100 + i), f"d{i % 7}/f{i}.txt", f"file {i}".encode()))
    steps: list[str] = []
    d = run(tmp_path / "out", broker, faults=steps.append)
    assert d.stats.delivered == 300
    # Not one ledger fsync or directory fsync per file: a few rounds of many files.
    assert steps.count("ledger-fsync") <= 10
    assert steps.count("fsync-dir") <= 10 * 8


def test_new_directories_are_made_durable_in_their_parents(
    broker: MemoryBroker, tmp_path: Path
) -> None:
    """A file delivered into directories created for it is durable only when each new
    directory's entry is: output.dir (for up/), up/ (for a/), a/ (for b/) and b/."""
    out = tmp_path / "out"
    produce(broker, whole(tid(70), "a/b/first.txt", b"1"))
    steps: list[str] = []
    run(out, broker, faults=steps.append)
    assert steps.count("fsync-dir") == 4 + 1  # + the ledger's rewrite at start-up
    produce(broker, whole(tid(71), "a/b/second.txt", b"2"))
    steps.clear()
    run(out, broker, faults=steps.append)
    assert steps.count("fsync-dir") == 1 + 1
    assert (out / "up" / "a" / "b" / "second.txt").read_bytes() == b"2"
