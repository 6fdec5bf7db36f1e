"""One file's exception never kills or hangs the uploader (defect 10)."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from test_upload_support import (
    CHUNK,
    TOPIC,
    complete,
    payload,
    run_once,
    transfers,
    uploader_settings,
    write,
)

from streamsend.errors import ExitStatus, KafkaFatal, TransferIncomplete
from streamsend.transport.base import AckCallback, OutHeaders
from streamsend.transport.memory import MemoryBroker, MemoryProducer, MemoryTransport
from streamsend.upload.service import Uploader

# Before the fix these runs never returned: a bounded limit turns a hang into a failure.
pytestmark = pytest.mark.timeout(10)


def test_a_name_that_is_not_utf8_is_reported_and_the_run_ends(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "good.bin", payload(2 * CHUNK))
    write(os.fsencode(source) + b"/bad\xff.bin", payload(10))
    broker = MemoryBroker()
    with pytest.raises(TransferIncomplete) as failed:
        run_once(uploader_settings(source), broker)
    assert failed.value.exit_status == ExitStatus.INCOMPLETE
    assert "'bad\\udcff.bin'" in str(failed.value)
    assert "good.bin" not in str(failed.value)
    assert complete(broker, "good.bin") == [payload(2 * CHUNK)]
    assert os.path.exists(os.fsencode(source) + b"/bad\xff.bin")


class BrokenProducer(MemoryProducer):
    """Raises ``error`` on the ``nth`` record of ``key``."""

    def __init__(self, broker: MemoryBroker, key: bytes, nth: int, error: Exception) -> None:
        super().__init__(broker)
        self.key, self.nth, self.error = key, nth, error

    def send(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        on_ack: AckCallback,
        partition: int | None = None,
    ) -> None:
        if key == self.key:
            self.nth -= 1
            if self.nth == 0:
                raise self.error
        super().send(topic, key, headers, value, on_ack, partition)


class BrokenTransport(MemoryTransport):
    def __init__(self, broker: MemoryBroker, key: bytes, nth: int, error: Exception) -> None:
        super().__init__(broker)
        self.args = (key, nth, error)

    def producer(self, overrides: Mapping[str, object]) -> BrokenProducer:
        return BrokenProducer(self.broker, *self.args)


@pytest.mark.parametrize("nth", [1, 2, 4])  # the first chunk, a later chunk, the end record
def test_an_exception_while_sending_abandons_that_file_only(tmp_path: Path, nth: int) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(3 * CHUNK, seed=1), age=7200)
    write(source / "b.bin", payload(3 * CHUNK, seed=2), age=3600)
    write(source / "c.bin", payload(3 * CHUNK, seed=3), age=1800)
    broker = MemoryBroker()
    transport = BrokenTransport(broker, b"up1/b.bin", nth, RuntimeError("boom"))
    settings = uploader_settings(source, **{"after.upload": "delete"})
    with pytest.raises(TransferIncomplete, match=r"1 file\(s\) not sent: 'b.bin' \(.*boom"):
        Uploader(settings, once=True, transport=transport).run()
    assert complete(broker, "a.bin") == [payload(3 * CHUNK, seed=1)]
    assert complete(broker, "c.bin") == [payload(3 * CHUNK, seed=3)]
    assert complete(broker, "b.bin") == []
    (b,) = [t for t in transfers(broker).values() if t.path == "b.bin"] or [None]
    if nth == 1:
        assert b is None  # nothing was produced: nothing to abort
    else:
        assert b is not None and b.aborted and b.end is None
    assert (source / "b.bin").exists()
    assert not (source / "a.bin").exists()

    # The next run sends it.
    run_once(settings, broker)
    assert complete(broker, "b.bin") == [payload(3 * CHUNK, seed=2)]


def test_a_read_error_fails_that_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(3 * CHUNK, seed=1), age=7200)
    write(source / "b.bin", payload(3 * CHUNK, seed=2), age=3600)
    real_pread = os.pread
    calls = []

    def pread(fd: int, n: int, offset: int) -> bytes:
        calls.append(offset)
        if len(calls) == 5:  # the second chunk of b.bin
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    broker = MemoryBroker()
    with pytest.raises(TransferIncomplete, match=r"'b.bin' \(.*Input/output error"):
        run_once(uploader_settings(source), broker)
    assert complete(broker, "a.bin") == [payload(3 * CHUNK, seed=1)]
    (b,) = [t for t in transfers(broker).values() if t.path == "b.bin"]
    assert b.aborted


def test_kafka_fatal_still_ends_the_run(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(3 * CHUNK))
    broker = MemoryBroker()
    transport = BrokenTransport(broker, b"up1/a.bin", 2, KafkaFatal("refused for good"))
    with pytest.raises(KafkaFatal, match="refused for good"):
        Uploader(uploader_settings(source), once=True, transport=transport).run()
    assert len(broker.records(TOPIC)) == 0  # the first chunk was still queued
