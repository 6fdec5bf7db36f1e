"""The state topic stays bounded and each uploader reads only its own (defect 12)."""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_upload_support import (
    STATE_TOPIC,
    TOPIC,
    UPLOADER,
    complete,
    payload,
    run_once,
    state_records,
    uploader_settings,
    write,
)

from streamsend.errors import ConfigError, ExitStatus
from streamsend.transport.memory import MemoryBroker, MemoryTransport
from streamsend.upload import scanner
from streamsend.upload.planning import plan_scan
from streamsend.upload.scanner import Candidate, Walk
from streamsend.upload.selection import FileRules
from streamsend.upload.service import Uploader
from streamsend.upload.state import STATE_TOPIC_CONFIG, version_of

OWN_PARTITION_OF_16 = zlib.crc32(f"{TOPIC}/{UPLOADER}".encode()) % 16


def sent_paths(broker: MemoryBroker) -> dict[str, bool]:
    """The compacted view of this uploader's state: path -> recorded (not tombstoned)."""
    view: dict[str, bool] = {}
    for path, value in state_records(broker):
        view[path] = value is not None
    return {p: v for p, v in view.items() if v}


# -- (a) tombstones -------------------------------------------------------------------


def test_a_file_that_is_gone_gets_a_tombstone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "in"
    for name in ["a.bin", "d/b.bin", "d/c.bin"]:
        write(source / name, payload(10))
    broker = MemoryBroker()
    settings = uploader_settings(source)
    assert run_once(settings, broker).sent == 3
    (source / "a.bin").unlink()
    (source / "d/c.bin").rename(source / "d/.c.bin")  # hidden now: not seen either
    assert run_once(settings, broker).sent == 0
    assert state_records(broker)[3:] == [("a.bin", None), ("d/c.bin", None)] or state_records(
        broker
    )[3:] == [("d/c.bin", None), ("a.bin", None)]
    assert sent_paths(broker) == {"d/b.bin": True}
    caplog.set_level(logging.INFO)
    run_once(settings, broker)
    assert "state: 1 file(s) already sent by this uploader" in caplog.text
    assert len(state_records(broker)) == 5  # nothing more: a tombstone is written once

    # It comes back: it is sent again.
    write(source / "a.bin", payload(10))
    assert run_once(settings, broker).sent == 1


def test_renamed_after_upload_leaves_no_state_behind(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(10))
    broker = MemoryBroker()
    settings = uploader_settings(source, **{"after.upload": "rename"})
    run_once(settings, broker)
    assert sent_paths(broker) == {"a.bin": True}
    run_once(settings, broker)
    assert sent_paths(broker) == {}


@pytest.fixture
def unlistable(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Directories (absolute paths) os.scandir refuses, whoever runs the test (root
    lists a mode 000 directory)."""
    refused: set[str] = set()
    real = os.scandir

    def scandir(path: str | os.PathLike[str]) -> Iterator[os.DirEntry[str]]:
        if os.fspath(path) in refused:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(scanner.os, "scandir", scandir)
    yield refused


def test_no_tombstone_below_a_directory_that_cannot_be_listed(
    tmp_path: Path, unlistable: set[str]
) -> None:
    source = tmp_path / "in"
    for name in ["top.bin", "d/x.bin", "d/e/y.bin", "dd/z.bin"]:
        write(source / name, payload(10))
    broker = MemoryBroker()
    settings = uploader_settings(source)
    assert run_once(settings, broker).sent == 4
    unlistable.add(str(source / "d"))
    (source / "dd/z.bin").unlink()  # "dd" starts like "d": still a tombstone
    assert run_once(settings, broker).sent == 0
    assert sent_paths(broker) == {"top.bin": True, "d/x.bin": True, "d/e/y.bin": True}
    unlistable.clear()
    assert run_once(settings, broker).sent == 0


def test_no_tombstone_when_input_dir_cannot_be_listed(tmp_path: Path, unlistable: set[str]) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(10))
    broker = MemoryBroker()
    settings = uploader_settings(source)
    run_once(settings, broker)
    unlistable.add(str(source))
    assert run_once(settings, broker).sent == 0
    unlistable.clear()
    assert sent_paths(broker) == {"a.bin": True}
    assert run_once(settings, broker).sent == 0


class FakeWalk(Walk):
    def __init__(self, root: Path, cands: list[Candidate], unlistable: list[str]) -> None:
        super().__init__(root)
        self.cands = cands
        self.unlistable = unlistable

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.cands)


def cand(relative: str) -> Candidate:
    return Candidate(relative, Path("/in") / relative, 1, 2, 3, 0o100644, 4)


@pytest.mark.parametrize(
    ("walked", "unlistable", "gone"),
    [
        (["a", "b/c"], [], ["x/y", "xx"]),
        ([], [""], []),  # input.dir itself could not be listed
        (["a"], ["x"], ["b/c", "xx"]),  # x/y may be there
        (["a"], ["b/c"], ["x/y", "xx"]),  # an entry that could not be examined
        (["a"], ["cafe\u0301"], ["b/c", "x/y", "xx"]),  # local names are compared in NFC
    ],
)
def test_what_is_gone(walked: list[str], unlistable: list[str], gone: list[str]) -> None:
    sent = {p: version_of(1, 2) for p in ["a", "b/c", "x/y", "xx", "caf\u00e9/f", "busy"]}
    plan = plan_scan(
        Path("/in"),
        FakeWalk(Path("/in"), [cand(p) for p in walked], unlistable),
        FileRules.from_settings(".*", 0, 0),
        sent,
        {"busy"},
        lambda _local: False,
        10**19,
    )
    expected = gone + (["caf\u00e9/f"] if gone and "cafe\u0301" not in unlistable else [])
    assert sorted(plan.gone) == sorted(expected)


# -- (b) one partition per uploader ------------------------------------------------------


def test_state_goes_to_one_partition_which_alone_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(10))
    write(source / "b.bin", payload(20))
    broker = MemoryBroker()
    settings = uploader_settings(source)
    run_once(settings, broker)
    parts = broker.topics[STATE_TOPIC].partitions
    assert len(parts) == 16  # processing.state.topic.partitions
    assert [len(p) for p in parts] == [2 if i == OWN_PARTITION_OF_16 else 0 for i in range(16)]
    assert broker.topics[STATE_TOPIC].config["cleanup.policy"] == "compact"

    # A record of ours planted in another partition is not read: it is not ours to read.
    st = (source / "b.bin").stat()
    planted = {"size": 20, "mtime_ns": st.st_mtime_ns, "sha256": "ab" * 32, "transfer": "cd" * 16}
    other = (OWN_PARTITION_OF_16 + 1) % 16
    (source / "a.bin").unlink()
    write(source / "c.bin", payload(30))
    key = f"{TOPIC}/{UPLOADER}/c.bin".encode()
    broker.append(STATE_TOPIC, key, [], json.dumps(planted).encode(), partition=other)
    # Another uploader's records in our partition are read and skipped.
    broker.append(STATE_TOPIC, b"files/up2/b.bin", [], b"{}", partition=OWN_PARTITION_OF_16)
    caplog.set_level(logging.INFO)
    assert run_once(settings, broker).sent == 1  # c.bin
    assert (
        f"state: 2 file(s) already sent by this uploader (read 3 record(s) of partition "
        f"{OWN_PARTITION_OF_16} of {STATE_TOPIC})" in caplog.text
    )
    assert complete(broker, "c.bin") == [payload(30)]
    assert len(parts[OWN_PARTITION_OF_16]) == 3 + 2  # a tombstone for a.bin, c.bin's state


def test_the_state_topic_partition_count_is_a_property(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(10))
    broker = MemoryBroker()
    run_once(uploader_settings(source, **{"processing.state.topic.partitions": "3"}), broker)
    parts = broker.topics[STATE_TOPIC].partitions
    own = zlib.crc32(f"{TOPIC}/{UPLOADER}".encode()) % 3
    assert [len(p) for p in parts] == [1 if i == own else 0 for i in range(3)]


def test_an_existing_state_topic_keeps_its_partition_count(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(10))
    broker = MemoryBroker()
    broker.create(STATE_TOPIC, 1, STATE_TOPIC_CONFIG)
    run_once(uploader_settings(source), broker)
    assert [len(p) for p in broker.topics[STATE_TOPIC].partitions] == [1]


# -- (c) the state topic must be compacted -------------------------------------------------


@pytest.mark.parametrize("policy", ["delete", None])
def test_a_state_topic_that_is_not_compacted_is_refused(tmp_path: Path, policy: str | None) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(10))
    broker = MemoryBroker()
    broker.create(STATE_TOPIC, 1, {"cleanup.policy": policy} if policy else {})
    with pytest.raises(ConfigError) as refused:
        run_once(uploader_settings(source), broker)
    message = str(refused.value)
    assert refused.value.exit_status == ExitStatus.CONFIG
    assert "\n" not in message
    assert f"state topic {STATE_TOPIC!r}" in message
    assert "cleanup.policy='delete'" in message
    assert "cleanup.policy=compact" in message  # the fix
    assert broker.records(TOPIC) == []
    # The lock was released: after the fix, the uploader runs.
    broker.topics[STATE_TOPIC].config["cleanup.policy"] = "compact,delete"
    assert run_once(uploader_settings(source), broker).sent == 1


class CountingReads(MemoryTransport):
    reads = 0

    def read_partition(
        self, topic: str, partition: int
    ) -> Iterator[tuple[bytes | None, bytes | None]]:
        self.reads += 1
        return super().read_partition(topic, partition)


def test_a_state_topic_created_just_now_is_not_read(tmp_path: Path) -> None:
    """Its partitions may have no leader yet (a real broker says so); there is nothing in
    it to read anyway."""
    source = tmp_path / "in"
    write(source / "a.bin", payload(10))
    broker = MemoryBroker()
    transport = CountingReads(broker)
    Uploader(uploader_settings(source), once=True, transport=transport).run()
    assert transport.reads == 0
    Uploader(uploader_settings(source), once=True, transport=transport).run()
    assert transport.reads == 1
