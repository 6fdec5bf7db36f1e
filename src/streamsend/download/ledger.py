"""The downloader's ledger: what is durably staged, being delivered, or finished.

One append-only file, ``.streamsend/ledger``, of JSON lines, written and fsynced once per
checkpoint or delivery round (never once per file): a file's durable steps cost a share of
one fsync, not a sidecar and a marker each. Entries:

- ``stage``: a transfer's uploader, path, declared size, the byte ranges durably in its
  ``.part`` file, and its end record once received (so an end record consumed before the
  last chunks survives a restart);
- ``deliver``: the transfer is verified, its data and metadata are fsynced, and it is
  about to be renamed to its final path (written before the rename, so recovery can tell
  "renamed" from "not yet": the ``.part`` is gone or still there);
- ``done``: finished without delivery (aborted by its uploader, rejected): its replayed
  records are ignored;
- ``forget``: dropped without remembering (expired).

Replaying the lines in order gives the state; the last entry of a transfer wins; a torn
last line (a crash mid-append) is ignored. The file is rewritten compactly (temporary
file, fsync, rename) at start-up and whenever it has grown large.

Pure: :func:`fold` and :func:`encode` work on text; the file lives in ``staging.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamsend.download.reassembly import RangeSet, Transfer
from streamsend.wire.protocol import End


@dataclass
class LedgerState:
    staged: dict[str, Transfer] = field(default_factory=dict)
    delivering: dict[str, Transfer] = field(default_factory=dict)
    # transfer id -> when it finished (seconds since the epoch), oldest first
    done: dict[str, float] = field(default_factory=dict)


def _end_doc(end: End) -> dict[str, Any]:
    return {
        "size": end.size,
        "chunks": end.chunks,
        "sha256": end.sha256,
        "mtime_ns": end.mtime_ns,
        "mode": end.mode,
    }


def stage_entry(t: Transfer) -> str:
    doc: dict[str, Any] = {
        "op": "stage",
        "t": t.transfer,
        "u": t.uploader,
        "p": t.path,
        "size": t.declared_size,
        "ranges": t.received.as_list(),
    }
    if t.end is not None:
        doc["end"] = _end_doc(t.end)
    return json.dumps(doc, separators=(",", ":"))


def deliver_entry(t: Transfer, at: float) -> str:
    assert t.end is not None
    doc = {
        "op": "deliver",
        "t": t.transfer,
        "u": t.uploader,
        "p": t.path,
        "end": _end_doc(t.end),
        "at": at,
    }
    return json.dumps(doc, separators=(",", ":"))


def done_entry(transfer: str, at: float) -> str:
    return json.dumps({"op": "done", "t": transfer, "at": at}, separators=(",", ":"))


def forget_entry(transfer: str) -> str:
    return json.dumps({"op": "forget", "t": transfer}, separators=(",", ":"))


def _transfer(doc: dict[str, Any]) -> Transfer:
    t = Transfer(
        transfer=str(doc["t"]),
        uploader=str(doc["u"]),
        path=str(doc["p"]),
        declared_size=int(doc.get("size", doc.get("end", {}).get("size", 0))),
        received=RangeSet([(int(s), int(e)) for s, e in doc.get("ranges", [])]),
        dirty=False,
    )
    if "end" in doc:
        e = doc["end"]
        t.end = End(
            t.transfer,
            t.uploader,
            t.path,
            size=int(e["size"]),
            chunks=int(e["chunks"]),
            sha256=str(e["sha256"]),
            mtime_ns=int(e["mtime_ns"]),
            mode=int(e["mode"]),
        )
    return t


def _parse(line: str) -> tuple[str, str, Transfer | None, float]:
    """(op, transfer id, the transfer it describes, its time); raises on a bad line."""
    doc = json.loads(line)
    op, transfer = doc["op"], str(doc["t"])
    if op in ("stage", "deliver"):
        return op, transfer, _transfer(doc), float(doc.get("at", 0.0))
    if op == "done":
        return op, transfer, None, float(doc["at"])
    if op == "forget":
        return op, transfer, None, 0.0
    raise ValueError(f"unknown entry {op!r}")


def fold(lines: Iterable[str]) -> tuple[LedgerState, int]:
    """The state the lines describe, and how many lines were unreadable (skipped)."""
    state = LedgerState()
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            op, transfer, t, at = _parse(line)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            bad += 1  # a torn last line after a crash, or damage: skip it
            continue
        # The last entry of a transfer says where it stands.
        state.staged.pop(transfer, None)
        state.delivering.pop(transfer, None)
        state.done.pop(transfer, None)
        if op == "stage" and t is not None:
            state.staged[transfer] = t
        elif op == "deliver" and t is not None:
            state.delivering[transfer] = t
            state.done[transfer] = at
        elif op == "done":
            state.done[transfer] = at
    return state, bad


def compact(state: LedgerState) -> list[str]:
    """The fewest lines that fold to the same state."""
    lines = [done_entry(t, at) for t, at in state.done.items() if t not in state.delivering]
    lines += [deliver_entry(t, state.done.get(t.transfer, 0.0)) for t in state.delivering.values()]
    lines += [stage_entry(t) for t in state.staged.values()]
    return lines
