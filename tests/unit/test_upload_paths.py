"""The uploader sends only paths the downloader accepts, in NFC (defect 11)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from test_upload_support import (
    STATE_TOPIC,
    TOPIC,
    complete,
    payload,
    run_once,
    state_records,
    transfers,
    uploader_settings,
    write,
)

from streamsend.errors import TransferIncomplete
from streamsend.transport.memory import MemoryBroker, MemoryTransport
from streamsend.upload.service import Uploader
from streamsend.upload.state import STATE_TOPIC_CONFIG
from streamsend.wire.paths import MAX_DEPTH, safe_relative_parts

NFD = "cafe\u0301.txt"
NFC = "caf\u00e9.txt"
QA = "\u0958"  # 3 bytes in UTF-8, 6 in NFC


def test_an_nfd_name_is_sent_in_nfc_and_acted_on_under_its_local_name(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "re\u0301sume\u0301" / NFD, payload(2500))
    broker = MemoryBroker()
    settings = uploader_settings(source, **{"after.upload": "delete"})
    assert run_once(settings, broker).sent == 1
    wire = f"r\u00e9sum\u00e9/{NFC}"
    assert complete(broker, wire) == [payload(2500)]
    assert {r.key for r in broker.records(TOPIC)} == {f"up1/{wire}".encode()}
    for t in transfers(broker).values():
        assert safe_relative_parts(t.path)
    assert [p for p, _ in state_records(broker)] == [wire]
    assert not (source / "re\u0301sume\u0301" / NFD).exists()


def test_an_nfd_name_is_recognised_as_sent_after_a_restart(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / NFD, payload(10))
    broker = MemoryBroker()
    settings = uploader_settings(source)
    assert run_once(settings, broker).sent == 1
    assert run_once(settings, broker).sent == 0
    assert len(complete(broker, NFC)) == 1


@pytest.mark.parametrize("action", ["keep", "delete"])
def test_two_names_that_normalise_alike_are_neither_sent(tmp_path: Path, action: str) -> None:
    source = tmp_path / "in"
    write(source / NFD, payload(10, seed=1))
    write(source / NFC, payload(10, seed=2))
    write(source / "other.txt", payload(10, seed=3))
    broker = MemoryBroker()
    with pytest.raises(TransferIncomplete) as failed:
        run_once(uploader_settings(source, **{"after.upload": action}), broker)
    message = str(failed.value)
    assert "2 file(s) not sent" in message
    assert f"{NFD!r} (ambiguous after Unicode normalisation" in message
    assert f"{NFC!r} (ambiguous after Unicode normalisation" in message
    assert [t.path for t in transfers(broker).values()] == ["other.txt"]
    assert (source / NFD).read_bytes() == payload(10, seed=1)
    assert (source / NFC).read_bytes() == payload(10, seed=2)


REFUSED = [
    pytest.param(b"back\\slash.txt", "back\\slash.txt", id="backslash"),
    pytest.param(b"ctl\x01.txt", "ctl\x01.txt", id="control"),
    pytest.param(b"new\nline", "new\nline", id="newline"),
    pytest.param(b"bad\xff.bin", "bad\udcff.bin", id="not-utf8"),
    pytest.param(
        b"/".join([b"d"] * MAX_DEPTH) + b"/f", "/".join(["d"] * MAX_DEPTH) + "/f", id="deep"
    ),
    pytest.param((QA * 85).encode(), QA * 85, id="component-over-255-bytes-in-nfc"),
    pytest.param(
        "/".join([QA * 40] * 18).encode(), "/".join([QA * 40] * 18), id="path-over-4096-in-nfc"
    ),
]


@pytest.mark.parametrize(("local", "name"), REFUSED)
@pytest.mark.parametrize("action", ["rename", "delete"])
def test_a_refused_name_is_reported_and_never_touched(
    tmp_path: Path, local: bytes, name: str, action: str
) -> None:
    source = tmp_path / "in"
    path = os.fsencode(source) + b"/" + local
    write(path, payload(10))
    write(source / "fine.txt", payload(20))
    broker = MemoryBroker()
    with pytest.raises(TransferIncomplete) as failed:
        run_once(uploader_settings(source, **{"after.upload": action}), broker)
    assert str(failed.value).startswith(f"1 file(s) not sent: {name!r} (")
    assert [t.path for t in transfers(broker).values()] == ["fine.txt"]
    with open(path, "rb") as fp:
        assert fp.read() == payload(10)
    assert not os.path.exists(path + b".FINISHED")
    assert [p for p, _ in state_records(broker)] == ["fine.txt"]


def test_a_refused_name_is_logged_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A service scans again and again: the same refusal must not be logged every time."""
    source = tmp_path / "in"
    write(source / "back\\slash.txt", payload(10))
    settings = uploader_settings(source, **{"full.scan.interval.ms": "10"})
    uploader = Uploader(settings, once=False, transport=MemoryTransport(MemoryBroker()))
    scan = uploader._scan_and_send
    scans = 0

    def counted() -> None:
        nonlocal scans
        scan()
        scans += 1
        if scans == 3:  # a new version: refused again, and said again
            write(source / "back\\slash.txt", payload(11), age=60)
        if scans == 6:
            uploader.stop()

    monkeypatch.setattr(uploader, "_scan_and_send", counted)
    caplog.set_level(logging.INFO)
    stats = uploader.run()
    assert scans == 6
    refusals = [r for r in caplog.records if "back\\\\slash.txt" in r.getMessage()]
    assert [r.levelno for r in refusals[:2]] == [logging.ERROR] * 2
    assert len(refusals) == 3, [r.getMessage() for r in refusals]  # twice, then at stop
    assert "stopping with 1 file(s) not sent yet" in refusals[2].getMessage()
    assert list(stats.failed) == ["back\\slash.txt"]


def test_state_recorded_under_a_path_no_downloader_accepts_is_forgotten(tmp_path: Path) -> None:
    """An older uploader sent (and recorded) names as they were: the downloader refused
    them, so the state must not keep them from being sent properly now."""
    source = tmp_path / "in"
    write(source / NFD, payload(10))
    st = (source / NFD).stat()
    broker = MemoryBroker()
    broker.create(STATE_TOPIC, 1, STATE_TOPIC_CONFIG)
    record = {"size": 10, "mtime_ns": st.st_mtime_ns, "sha256": "ab" * 32, "transfer": "cd" * 16}
    broker.append(STATE_TOPIC, f"{TOPIC}/up1/{NFD}".encode(), [], json.dumps(record).encode())
    assert run_once(uploader_settings(source), broker).sent == 1
    assert complete(broker, NFC) == [payload(10)]
    assert state_records(broker)[1:] == [(NFD, None), (NFC, state_records(broker)[2][1])]
