"""One scan of input.dir turned into decisions: which files to send under which wire
path, which names cannot be sent and why, and which files recorded as sent are gone.

Reads the filesystem only through the walk it is given, plus an ``lstat`` of the NFC twin
of a name that is not in NFC. Memory: the candidates to send, the refused names and, for
the length of the scan, a set of references to the recorded paths (the strings are the
state's own); never a new entry per file of the tree.

A recorded file is gone only when the walk could have seen it: nothing is gone when
input.dir itself could not be listed, and nothing below a directory (or entry) that could
not be listed. A file in flight is never gone: its transfer decides.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamsend.upload.scanner import Candidate, Walk
from streamsend.upload.selection import FileRules
from streamsend.upload.state import Version, version_of
from streamsend.wire.paths import UnsafePath, wire_path

AMBIGUOUS = "ambiguous after Unicode normalisation"


@dataclass
class ScanPlan:
    # (local file, wire path) to send, oldest first.
    send: list[tuple[Candidate, str]] = field(default_factory=list)
    # Local names that cannot be sent: local path -> (version, why).
    refused: dict[str, tuple[Version, str]] = field(default_factory=dict)
    # Wire paths recorded as sent whose file is gone (the walk could see it was not there).
    gone: list[str] = field(default_factory=list)


def plan_scan(
    root: Path,
    walk: Walk,
    rules: FileRules,
    sent: Mapping[str, Version],
    inflight: Container[str],
    waiting: Callable[[str], bool],
    now_ns: int,
) -> ScanPlan:
    """``sent`` and ``inflight`` are keyed by wire path; ``waiting(local)`` is true for a
    file that failed recently and waits to be retried."""
    plan = ScanPlan()
    # Wire path -> the local files whose name is not their wire path (not in NFC).
    renamed: dict[str, list[Candidate]] = {}
    # References to the keys of ``sent``: no new string per file.
    unseen = set(sent)
    for cand in walk:
        local = cand.relative
        unseen.discard(local)
        if not local.isascii():
            unseen.discard(unicodedata.normalize("NFC", local))
        if not rules.wanted_name(local):
            continue
        if rules.too_old(cand.mtime_ns, now_ns) or not rules.old_enough(cand.mtime_ns, now_ns):
            continue
        if waiting(local):
            continue
        version = version_of(cand.size, cand.mtime_ns)
        if local in sent:
            wire = local  # recorded state holds only valid wire paths
        else:
            try:
                wire = wire_path(local)
            except UnsafePath as exc:
                plan.refused[local] = (version, str(exc))
                continue
            if wire != local:
                renamed.setdefault(wire, []).append(cand)
        if wire in inflight or sent.get(wire) == version:
            continue
        plan.send.append((cand, wire))
    ambiguous = _ambiguous(root, rules, renamed)
    for wire, twins in ambiguous.items():
        names = " and ".join(repr(c.relative) for c in twins)
        both = "both" if len(twins) == 2 else "all"
        for c in twins:
            why = f"{AMBIGUOUS}: {names} {both} become {wire!r} on the wire"
            plan.refused[c.relative] = (version_of(c.size, c.mtime_ns), why)
    if ambiguous:
        plan.send = [(c, wire) for c, wire in plan.send if wire not in ambiguous]
    plan.send.sort(key=lambda cw: (cw[0].mtime_ns, cw[0].relative))
    if walk.complete:
        hidden = _prefixes(walk.unlistable)
        plan.gone = [p for p in unseen if p not in inflight and not _below(p, hidden)]
    return plan


def _prefixes(unlistable: Iterable[str]) -> tuple[str, ...]:
    """What the walk could not see, as wire path prefixes."""
    return tuple(unicodedata.normalize("NFC", local) for local in unlistable)


def _below(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _ambiguous(
    root: Path, rules: FileRules, renamed: Mapping[str, list[Candidate]]
) -> dict[str, list[Candidate]]:
    """Wire paths that more than one local file maps to. A name already in NFC is its
    own wire path, so it can only collide with a renamed one: look it up directly rather
    than remembering every name of the scan."""
    found = {}
    for wire, cands in renamed.items():
        twins = list(cands)
        if rules.wanted_name(wire):
            try:
                st = os.lstat(root / wire)
            except OSError:
                st = None
            # Same inode: a filesystem that ignores normalisation (APFS) found the same file.
            if (
                st is not None
                and stat.S_ISREG(st.st_mode)
                and all(st.st_ino != c.inode for c in cands)
            ):
                twins.append(
                    Candidate(
                        wire,
                        root / wire,
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ino,
                        st.st_mode,
                        st.st_ctime_ns,
                    )
                )
        if len(twins) > 1:
            found[wire] = twins
    return found
