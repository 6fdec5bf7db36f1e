"""The uploader service on the in-memory transport: records, acknowledgements, state,
after.upload and backpressure, deterministically and without a broker."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
from test_upload_support import (
    CHUNK,
    STATE_TOPIC,
    TOPIC,
    RecordingBroker,
    complete,
    payload,
    run_once,
    state_records,
    transfers,
    uploader_settings,
    write,
)

import streamsend.upload
from streamsend.transport.base import AckCallback, OutHeaders, Received
from streamsend.transport.memory import MemoryBroker, MemoryProducer, MemoryTransport
from streamsend.upload.service import Uploader
from streamsend.wire.protocol import Chunk, End, decode


def test_nothing_under_upload_imports_confluent_kafka() -> None:
    for module in Path(streamsend.upload.__file__).parent.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "confluent_kafka" for n in names), module


def test_a_file_becomes_chunks_and_an_end_record(tmp_path: Path) -> None:
    data = payload(2 * CHUNK + 500)
    write(tmp_path / "in/sub/a.bin", data)
    (tmp_path / "in/sub/a.bin").chmod(0o640)
    broker = MemoryBroker()
    stats = run_once(uploader_settings(tmp_path / "in"), broker)
    assert (stats.sent, stats.sent_bytes, stats.failed) == (1, len(data), {})

    messages = [decode(r.headers, r.value) for r in broker.records(TOPIC)]
    chunks = [m for m in messages if isinstance(m, Chunk)]
    assert [(c.index, c.offset, len(c.data), c.size) for c in chunks] == [
        (0, 0, CHUNK, len(data)),
        (1, CHUNK, CHUNK, len(data)),
        (2, 2 * CHUNK, 500, len(data)),
    ]
    end = messages[-1]
    assert isinstance(end, End) and len(messages) == 4
    assert end.sha256 == hashlib.sha256(data).hexdigest()
    assert (end.size, end.chunks, end.mode) == (len(data), 3, 0o640)
    assert end.mtime_ns == (tmp_path / "in/sub/a.bin").stat().st_mtime_ns
    assert {m.path for m in messages} == {"sub/a.bin"}
    assert {m.transfer for m in messages} == {end.transfer}
    assert {r.key for r in broker.records(TOPIC)} == {b"up1/sub/a.bin"}
    assert complete(broker, "sub/a.bin") == [data]


def test_an_empty_file_is_one_end_record(tmp_path: Path) -> None:
    write(tmp_path / "in/empty", b"")
    broker = MemoryBroker()
    run_once(uploader_settings(tmp_path / "in"), broker)
    (record,) = broker.records(TOPIC)
    end = decode(record.headers, record.value)
    assert isinstance(end, End)
    assert (end.size, end.chunks, end.sha256) == (0, 0, hashlib.sha256(b"").hexdigest())


def test_the_state_record_follows_the_acknowledgements(tmp_path: Path) -> None:
    data = payload(3 * CHUNK)
    write(tmp_path / "in/a.bin", data)
    broker = RecordingBroker()
    seen_at_state: list[int] = []

    def on_append(record: Received) -> None:
        if record.topic == STATE_TOPIC:
            data_records = broker.records(TOPIC)
            seen_at_state.append(len(data_records))
            assert all(broker.is_acked(r) for r in data_records)

    broker.on_append = on_append
    run_once(uploader_settings(tmp_path / "in"), broker)
    assert seen_at_state == [4]
    ((path, value),) = state_records(broker)
    assert path == "a.bin"
    assert value is not None
    doc = json.loads(value)
    ((transfer, _),) = transfers(broker).items()
    assert doc == {
        "size": len(data),
        "mtime_ns": (tmp_path / "in/a.bin").stat().st_mtime_ns,
        "sha256": hashlib.sha256(data).hexdigest(),
        "transfer": transfer,
    }


@pytest.mark.parametrize("action", ["rename", "delete"])
def test_after_upload_only_once_every_record_is_acknowledged(tmp_path: Path, action: str) -> None:
    source = tmp_path / "in"
    data = payload(3 * CHUNK + 1)
    write(source / "a.bin", data)
    steps: list[str] = []

    def on_step(step: str) -> None:
        steps.append(step)
        if step == "ack" and "after.upload" not in steps:
            # Until the last acknowledgement, the file is where it was.
            assert (source / "a.bin").read_bytes() == data
        if step == "after.upload":
            records = broker.records(TOPIC)
            assert len(records) == 5 and all(broker.is_acked(r) for r in records)

    broker = RecordingBroker(on_step)
    run_once(uploader_settings(source, **{"after.upload": action}), broker, faults=on_step)
    assert steps == ["ack"] * 5 + ["after.upload", "state", "ack"]
    assert not (source / "a.bin").exists()
    finished = source / "a.bin.FINISHED"
    assert finished.exists() == (action == "rename")
    assert complete(broker, "a.bin") == [data]


def test_a_restarted_uploader_sends_nothing_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "in"
    write(source / "a.bin", payload(2500))
    write(source / "d/b.bin", payload(10, seed=1))
    write(source / "empty", b"")
    broker = MemoryBroker()
    settings = uploader_settings(source)
    assert run_once(settings, broker).sent == 3
    records = len(broker.records(TOPIC))
    caplog.set_level(logging.INFO)
    again = run_once(settings, broker)
    assert again.sent == 0
    assert len(broker.records(TOPIC)) == records
    assert "state: 3 file(s) already sent by this uploader" in caplog.text
    assert sorted(p for p, _ in state_records(broker)) == ["a.bin", "d/b.bin", "empty"]

    # A modified file (new mtime) is sent again, and only it.
    write(source / "d/b.bin", payload(10, seed=2), age=60)
    assert run_once(settings, broker).sent == 1
    assert complete(broker, "d/b.bin") == [payload(10, seed=1), payload(10, seed=2)]


class CountingProducer(MemoryProducer):
    def __init__(self, broker: MemoryBroker, max_queued: int) -> None:
        super().__init__(broker, max_queued)
        self.full = 0
        self.most_queued = 0

    def send(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        on_ack: AckCallback,
        partition: int | None = None,
    ) -> None:
        try:
            super().send(topic, key, headers, value, on_ack, partition)
        except Exception:
            self.full += 1
            raise
        self.most_queued = max(self.most_queued, self.queued())


class CountingTransport(MemoryTransport):
    def producer(self, overrides: Mapping[str, object]) -> CountingProducer:
        self.made = CountingProducer(self.broker, self._max_queued)
        return self.made


def test_a_full_queue_is_backpressure_not_an_error(tmp_path: Path) -> None:
    source = tmp_path / "in"
    files = {f"f{i}.bin": payload(10 * CHUNK + i, seed=i) for i in range(3)}
    for name, data in files.items():
        write(source / name, data)
    broker = MemoryBroker()
    transport = CountingTransport(broker, max_queued=2)
    stats = Uploader(uploader_settings(source), once=True, transport=transport).run()
    assert stats.sent == 3 and not stats.failed
    assert transport.made.full > 0
    assert transport.made.most_queued <= 2
    for name, data in files.items():
        assert complete(broker, name) == [data]
