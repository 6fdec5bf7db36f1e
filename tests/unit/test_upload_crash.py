"""Crash injection: the uploader dies at every durable step around sending a file, and a
restarted uploader finishes the job without losing or wrongly removing any file.

The durable steps are each acknowledgement (the in-memory broker calls its fault hook
after appending a record and before acknowledging it, so a crash there leaves the record
on the topic unacknowledged, as a lost acknowledgement does), the after.upload action and
the state record's send (the uploader's ``faults`` test seam) and the state record's
acknowledgement. A first run with a counting hook enumerates them; then, for each step n,
a fresh input.dir and broker, an uploader that dies at step n, and a restarted one.

What "exactly once" means here: when the crash falls between the acknowledgement of a
transfer's last record and the state record, nothing durable says that the file was sent,
so the restarted uploader sends it again, in a new transfer with a new id (and, with
after.upload rename/delete, only then renames or deletes it). The topic then holds two
complete transfers of identical bytes; the downloader delivers the second as a new
version of the same path, atomically replacing the first with the same bytes, so a reader
of output.dir sees the file once and whole. Exactly once holds at the downloader's final
path, not on the topic, where it is at least once (docs/reliability.md).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from test_upload_support import (
    CHUNK,
    RecordingBroker,
    complete,
    payload,
    run_once,
    state_records,
    transfers,
    uploader_settings,
    write,
)

from crashplan import Crash, CrashPlan
from streamsend.transport.memory import MemoryTransport
from streamsend.upload.service import Uploader

FILES = {
    "empty": b"",
    "one.bin": payload(CHUNK - 1, seed=1),
    "d/three.bin": payload(2 * CHUNK + 7, seed=2),
    "d/e/two.bin": payload(2 * CHUNK, seed=3),
}


def prepare(root: Path) -> Path:
    source = root / "in"
    for age, (name, data) in enumerate(FILES.items()):
        write(source / name, data, age=3600 - age)  # sent in this order
    return source


def crash_and_restart(
    root: Path, action: str, crash_at: int | None
) -> tuple[Path, RecordingBroker]:
    source = prepare(root)
    settings = uploader_settings(source, **{"after.upload": action})
    steps = CrashPlan(crash_at)
    broker = RecordingBroker(steps)
    crashed = Uploader(settings, once=True, transport=MemoryTransport(broker), faults=steps)
    if crash_at is None:
        crashed.run()
        return source, broker
    with pytest.raises(Crash):
        crashed.run()
    # What the kernel does for a dead process: its descriptors are closed, which releases
    # the flock. Its producer's queue, with whatever it held, dies with it.
    assert crashed.lock is not None
    crashed.lock.abandon()
    broker.on_step = None
    restarted = run_once(settings, broker)
    assert restarted.failed == {}
    return source, broker


def check(source: Path, broker: RecordingBroker, action: str, where: str) -> None:
    found = transfers(broker)
    for name, data in FILES.items():
        # Every file reached the topic whole, in at least one complete transfer.
        assert data in complete(broker, name), f"{where}: {name} never sent whole"
        here = (source / name).exists()
        finished = source / f"{name}.FINISHED"
        # No file is lost, and each ended as after.upload says.
        if action == "keep":
            assert here and (source / name).read_bytes() == data, where
        elif action == "rename":
            assert not here and finished.read_bytes() == data, where
        else:
            assert not here and not finished.exists(), where
        if action != "keep":
            # Renamed or deleted only after a complete transfer of exactly its bytes was
            # acknowledged, every record of it.
            acked = [
                t
                for t in found.values()
                if t.path == name
                and t.content() == data
                and all(broker.is_acked(r) for r in t.records)
            ]
            assert acked, f"{where}: {name} was removed without an acknowledged transfer"
    # The state records each file once: one record per file (keep). With rename or
    # delete a crash between the action and the state record leaves none, which is
    # right: the file is gone, there is nothing to remember.
    recorded = Counter(path for path, value in state_records(broker) if value is not None)
    assert set(recorded) <= set(FILES), where
    for name in FILES:
        if action == "keep":
            assert recorded[name] == 1, f"{where}: {name} recorded {recorded[name]} times"
        else:
            assert recorded[name] <= 1, f"{where}: {name} recorded {recorded[name]} times"


@pytest.mark.parametrize("action", ["keep", "rename", "delete"])
def test_a_crash_at_any_step_loses_nothing(tmp_path: Path, action: str) -> None:
    source, broker = crash_and_restart(tmp_path / "count", action, None)
    check(source, broker, action, "without a crash")
    assert broker.on_step is not None
    steps = broker.on_step.seen  # type: ignore[attr-defined]
    records = len(broker.records("files")) + len(broker.records("state"))
    assert steps.count("ack") == records
    assert steps.count("state") == len(FILES)
    assert steps.count("after.upload") == (0 if action == "keep" else len(FILES))

    for n, step in enumerate(steps, start=1):
        where = f"crash at step {n} ({step})"
        source, broker = crash_and_restart(tmp_path / f"crash-{n}", action, n)
        check(source, broker, action, where)


def test_a_restart_after_a_crash_between_ack_and_state_sends_again(tmp_path: Path) -> None:
    """The corner named in the module docstring, shown explicitly: two complete
    transfers of the same bytes, and one state record."""
    _, broker = crash_and_restart(tmp_path / "count", "keep", None)
    steps = broker.on_step.seen  # type: ignore[attr-defined]
    first_state = steps.index("state") + 1
    first = state_records(broker)[0][0]  # the file whose state record comes first
    _, broker = crash_and_restart(tmp_path / "crash", "keep", first_state)
    assert len(complete(broker, first)) == 2
    assert len({t for t, x in transfers(broker).items() if x.path == first}) == 2
    assert [p for p, v in state_records(broker) if p == first and v is not None] == [first]
