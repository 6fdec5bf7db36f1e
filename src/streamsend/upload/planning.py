"""One scan of input.dir, or of the paths that changed in it, turned into decisions: which
files to send under which wire path, which names cannot be sent and why, which files are
too young yet, and which files recorded as sent are gone. Both plans decide about each
file in one place (``_Planner.consider``).

Reads the filesystem only through the walk or lookup it is given, plus an ``lstat`` of
the NFC twin of a name that is not in NFC. Memory: the candidates to send, the refused
names, the young files and, for the length of the scan, a set of references to the
recorded paths (the strings are the state's own); never a new entry per file of the tree.

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

from streamsend.upload.scanner import Candidate, Lookup, Walk
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
    # Files too young to send yet: (wall-clock ns when they are old enough, local path),
    # so that the uploader looks at them again then, not only at its next full scan.
    young: list[tuple[int, str]] = field(default_factory=list)
    # What a plan of changes looked at (the changed paths and their Unicode twins): a
    # refusal of one of them that ``refused`` does not repeat no longer holds.
    checked: set[str] = field(default_factory=set)


class _Planner:
    """The decision about one candidate, the same in a full scan and in a plan of
    changes, and the check for ambiguous names that completes either."""

    def __init__(
        self,
        root: Path,
        rules: FileRules,
        sent: Mapping[str, Version],
        inflight: Container[str],
        waiting: Callable[[str], bool],
        now_ns: int,
    ) -> None:
        self.root = root
        self.rules = rules
        self.sent = sent
        self.inflight = inflight
        self.waiting = waiting
        self.now_ns = now_ns
        self.plan = ScanPlan()
        # Wire path -> the local files whose name is not their wire path (not in NFC).
        self.renamed: dict[str, list[Candidate]] = {}

    def consider(self, cand: Candidate) -> None:
        rules, plan, local = self.rules, self.plan, cand.relative
        if not rules.wanted_name(local) or rules.too_old(cand.mtime_ns, self.now_ns):
            return
        if not rules.old_enough(cand.mtime_ns, self.now_ns):
            plan.young.append((cand.mtime_ns + rules.minimum_age_ns, local))
            return
        if self.waiting(local):
            return
        version = version_of(cand.size, cand.mtime_ns)
        if local in self.sent:
            wire = local  # recorded state holds only valid wire paths
        else:
            try:
                wire = wire_path(local)
            except UnsafePath as exc:
                plan.refused[local] = (version, str(exc))
                return
            if wire != local:
                self.renamed.setdefault(wire, []).append(cand)
        if wire in self.inflight or self.sent.get(wire) == version:
            return
        plan.send.append((cand, wire))

    def finish(self) -> ScanPlan:
        plan = self.plan
        ambiguous = _ambiguous(self.root, self.rules, self.renamed)
        for wire, twins in ambiguous.items():
            names = " and ".join(repr(c.relative) for c in twins)
            both = "both" if len(twins) == 2 else "all"
            for c in twins:
                why = f"{AMBIGUOUS}: {names} {both} become {wire!r} on the wire"
                plan.refused[c.relative] = (version_of(c.size, c.mtime_ns), why)
        if ambiguous:
            plan.send = [(c, wire) for c, wire in plan.send if wire not in ambiguous]
        plan.send.sort(key=lambda cw: (cw[0].mtime_ns, cw[0].relative))
        return plan


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
    planner = _Planner(root, rules, sent, inflight, waiting, now_ns)
    # References to the keys of ``sent``: no new string per file.
    unseen = set(sent)
    for cand in walk:
        local = cand.relative
        unseen.discard(local)
        if not local.isascii():
            unseen.discard(unicodedata.normalize("NFC", local))
        planner.consider(cand)
    plan = planner.finish()
    if walk.complete:
        hidden = _prefixes(walk.unlistable)
        plan.gone = [p for p in unseen if p not in inflight and not _below(p, hidden)]
    return plan


def plan_changes(
    root: Path,
    changed: Iterable[str],
    rules: FileRules,
    sent: Mapping[str, Version],
    inflight: Container[str],
    waiting: Callable[[str], bool],
    now_ns: int,
) -> ScanPlan:
    """:func:`plan_scan` for only the ``changed`` local paths (the watcher's, or files
    due to be looked at again), by the same rules.

    A non-ASCII path brings its NFC and NFD forms along, so that twins that become one
    wire path are found when only one of them changed (the usual pair: a Mac writes NFD,
    Linux NFC; rarer forms are left to the full scan). A recorded path is gone when it is
    missing and no checked name that maps to it is present; what left with a whole
    directory is left to the full scan, which sees every recorded path."""
    checked = _with_twins(changed)
    lookup = Lookup(root, checked)
    planner = _Planner(root, rules, sent, inflight, waiting, now_ns)
    present: set[str] = set()  # wire forms of the non-ASCII names found
    for cand in lookup:
        if not cand.relative.isascii():
            present.add(unicodedata.normalize("NFC", cand.relative))
        planner.consider(cand)
    plan = planner.finish()
    plan.checked = checked
    plan.gone = [p for p in lookup.missing if p in sent and p not in inflight and p not in present]
    return plan


def _with_twins(paths: Iterable[str]) -> set[str]:
    found = set(paths)
    for local in list(found):
        if not local.isascii():
            found.add(unicodedata.normalize("NFC", local))
            found.add(unicodedata.normalize("NFD", local))
    return found


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
