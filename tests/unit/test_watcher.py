"""Pick-up without waiting for a full scan: the inotify watcher on real directories, the
plan of only what changed, and the uploader between its full scans."""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import Event
from test_upload_support import TOPIC, complete, payload, transfers, uploader_settings, write

from streamsend.transport.base import AckCallback, OutHeaders
from streamsend.transport.memory import MemoryBroker, MemoryProducer, MemoryTransport
from streamsend.upload import service, watcher
from streamsend.upload.planning import AMBIGUOUS, ScanPlan, plan_changes, plan_scan
from streamsend.upload.scanner import Walk
from streamsend.upload.selection import FileRules
from streamsend.upload.service import Uploader
from streamsend.upload.state import Version, version_of
from streamsend.upload.watcher import (
    IN_CREATE,
    IN_ISDIR,
    IN_Q_OVERFLOW,
    Changes,
    Watcher,
    WatchUnavailable,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only"),
]

RULES = FileRules.from_settings(".*", 0, 0)


def collect(w: Watcher, until: Callable[[Changes], bool], timeout: float = 5) -> Changes:
    """Everything the watcher reports until ``until`` holds for it (or time runs out)."""
    found = Changes()
    deadline = time.monotonic() + timeout
    while not until(found) and time.monotonic() < deadline:
        got = w.changes(0.1)
        found.paths |= got.paths
        found.rescan |= got.rescan
    return found


def has(*paths: str) -> Callable[[Changes], bool]:
    return lambda changes: set(paths) <= changes.paths


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Watcher]]:
    root = tmp_path / "in"
    root.mkdir()
    w = Watcher(root, RULES.wanted_name)
    yield root, w
    w.close()


# -- the watcher ------------------------------------------------------------------------


def test_a_new_file_is_reported(watched: tuple[Path, Watcher]) -> None:
    root, w = watched
    (root / "a.txt").write_bytes(b"x")
    assert collect(w, has("a.txt")).paths == {"a.txt"}


def test_files_in_a_nested_directory_created_after_start_are_reported(
    watched: tuple[Path, Watcher],
) -> None:
    root, w = watched
    # Written at once: the file lands before the new directories can be watched.
    (root / "a/b/c").mkdir(parents=True)
    (root / "a/b/c/early.txt").write_bytes(b"x")
    assert "a/b/c/early.txt" in collect(w, has("a/b/c/early.txt")).paths
    # And the directories are watched from then on.
    (root / "a/b/c/later.txt").write_bytes(b"y")
    (root / "a/b/other.txt").write_bytes(b"z")
    assert {"a/b/c/later.txt", "a/b/other.txt"} <= collect(
        w, has("a/b/c/later.txt", "a/b/other.txt")
    ).paths
    assert w.watches == 4


def test_a_tree_and_a_file_moved_in_are_reported(
    watched: tuple[Path, Watcher], tmp_path: Path
) -> None:
    root, w = watched
    outside = tmp_path / "outside"
    (outside / "d/e").mkdir(parents=True)
    (outside / "d/e/f.txt").write_bytes(b"x")
    (outside / "d/g.txt").write_bytes(b"x")
    (outside / "single.txt").write_bytes(b"x")
    (outside / "d").rename(root / "d")
    (outside / "single.txt").rename(root / "single.txt")
    found = collect(w, has("d/e/f.txt", "d/g.txt", "single.txt"))
    assert found.paths == {"d/e/f.txt", "d/g.txt", "single.txt"}
    (root / "d/e/h.txt").write_bytes(b"x")
    assert collect(w, has("d/e/h.txt")).paths == {"d/e/h.txt"}


def test_a_directory_renamed_inside_is_watched_under_its_new_name(
    watched: tuple[Path, Watcher], tmp_path: Path
) -> None:
    root, w = watched
    (root / "old/sub").mkdir(parents=True)
    collect(w, lambda _c: False, timeout=0.3)
    (root / "old").rename(root / "new")
    collect(w, lambda _c: False, timeout=0.3)
    (root / "new/sub/f.txt").write_bytes(b"x")
    assert collect(w, has("new/sub/f.txt")).paths == {"new/sub/f.txt"}


def test_a_directory_moved_out_is_no_longer_watched(
    watched: tuple[Path, Watcher], tmp_path: Path
) -> None:
    root, w = watched
    (root / "d/sub").mkdir(parents=True)
    collect(w, lambda _c: False, timeout=0.3)
    assert w.watches == 3
    (root / "d").rename(tmp_path / "elsewhere")
    collect(w, lambda _c: False, timeout=0.3)
    assert w.watches == 1
    # Its events would otherwise be taken for changes at its old path, d/sub/x.txt.
    (tmp_path / "elsewhere/sub/x.txt").write_bytes(b"x")
    assert collect(w, lambda _c: False, timeout=0.3).paths == set()


def test_what_the_scanner_skips_is_not_reported(
    watched: tuple[Path, Watcher], tmp_path: Path
) -> None:
    root, w = watched
    target = tmp_path / "target"
    target.mkdir()
    (root / "link").symlink_to(target)
    (root / ".hidden").mkdir()
    collect(w, lambda _c: False, timeout=0.3)
    (root / ".streamsend-uploader.lock").write_bytes(b"")
    (root / ".partial.tmp").write_bytes(b"x")
    (root / ".hidden/inner.txt").write_bytes(b"x")
    (target / "behind-the-link.txt").write_bytes(b"x")
    (root / "x.txt.FINISHED").write_bytes(b"x")
    (root / "visible.txt").write_bytes(b"x")
    assert collect(w, has("visible.txt"), timeout=1).paths == {"visible.txt"}
    assert w.watches == 1


class InjectOverflow:
    """The real inotify, with a queue overflow reported in its next read."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def read(self, timeout: int | None = None) -> list[Event]:
        return [*self.real.read(timeout=0), Event(-1, IN_Q_OVERFLOW, 0, "")]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_an_overflow_asks_for_a_full_scan(watched: tuple[Path, Watcher]) -> None:
    root, w = watched
    w._inotify = InjectOverflow(w._inotify)
    (root / "a.txt").write_bytes(b"x")
    time.sleep(0.05)
    found = w.changes(0)
    assert found.rescan and found.paths == set()


def test_too_many_changes_at_once_ask_for_a_full_scan(
    watched: tuple[Path, Watcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, w = watched
    monkeypatch.setattr(watcher, "MAX_PENDING_PATHS", 3)
    for i in range(5):
        (root / f"{i}.txt").write_bytes(b"x")
    found = collect(w, lambda c: c.rescan)
    assert found.rescan and found.paths == set()


def test_no_inotify_means_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "inotify_simple", None)  # import fails, as off Linux
    with pytest.raises(WatchUnavailable, match="not available"):
        Watcher(tmp_path)


class LimitedINotify:
    """An inotify that accepts ``watches`` watches, then fails as the kernel does when
    fs.inotify.max_user_watches is reached."""

    def __init__(self, watches: int) -> None:
        self.left = watches
        self.closed = False

    def add_watch(self, path: Any, mask: int) -> int:
        if self.left == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= 1
        return self.left + 1

    def rm_watch(self, wd: int) -> None:
        return None

    def read(self, timeout: int | None = None) -> Iterable[Any]:
        return []

    def close(self) -> None:
        self.closed = True


def test_the_watch_limit_means_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    fake = LimitedINotify(2)
    monkeypatch.setattr(watcher, "_open_inotify", lambda: fake)
    with pytest.raises(WatchUnavailable, match="max_user_watches"):
        Watcher(tmp_path)
    assert fake.closed


def test_a_new_directory_beyond_the_watch_limit_ends_the_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its files would go unseen: the uploader must know, and scan instead."""
    fake = LimitedINotify(1)
    monkeypatch.setattr(watcher, "_open_inotify", lambda: fake)
    w = Watcher(tmp_path)
    (tmp_path / "new").mkdir()
    with pytest.raises(WatchUnavailable, match="max_user_watches"):
        w._handle(1, IN_CREATE | IN_ISDIR, "new")


def test_input_dir_removed_is_lost_and_asks_for_a_full_scan(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    w = Watcher(root)
    try:
        root.rmdir()
        found = collect(w, lambda c: c.rescan)
        assert found.rescan and w.lost
    finally:
        w.close()


def test_close_closes_the_descriptor(tmp_path: Path) -> None:
    w = Watcher(tmp_path)
    fd = w._inotify.fileno()
    w.close()
    with pytest.raises(OSError):
        os.fstat(fd)


# -- the plan of what changed -----------------------------------------------------------


def plans(root: Path, sent: dict[str, Version], changed: Iterable[str]) -> tuple[ScanPlan, ...]:
    """A full scan's plan and a plan of ``changed``, with the same rules and state."""
    rules = FileRules.from_settings(".*", 60_000, 0)
    now = time.time_ns()
    full = plan_scan(root, Walk(root), rules, sent, {"busy.txt"}, lambda _: False, now)
    some = plan_changes(root, changed, rules, sent, {"busy.txt"}, lambda _: False, now)
    return full, some


def summary(plan: ScanPlan) -> tuple[list[str], list[str], list[str]]:
    return (
        [c.relative for c, _ in plan.send],
        sorted(plan.refused),
        sorted(local for _, local in plan.young),
    )


def test_a_plan_of_changes_decides_as_a_full_scan_does(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "new.txt", b"new", age=120)
    write(root / "d/e/older.txt", b"older", age=300)
    write(root / "same.txt", b"same", age=120)
    write(root / "busy.txt", b"busy", age=120)
    write(root / "back\\slash.txt", b"refused", age=120)
    write(root / "young.txt", b"young", age=1)
    write(root / ".hidden.txt", b"hidden", age=120)
    st = (root / "same.txt").stat()
    sent = {"same.txt": version_of(st.st_size, st.st_mtime_ns)}
    everything = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    full, some = plans(root, sent, everything)
    assert summary(some) == summary(full)
    assert summary(some) == (
        ["d/e/older.txt", "new.txt"],
        ["back\\slash.txt"],
        ["young.txt"],
    )


def test_a_plan_of_changes_finds_the_unicode_twin_that_did_not_change(tmp_path: Path) -> None:
    root = tmp_path / "in"
    nfc, nfd = "caf\u00e9.txt", "cafe\u0301.txt"
    write(root / nfd, b"from a Mac", age=120)
    write(root / nfc, b"from Linux", age=120)
    full, some = plans(root, {}, [nfc])
    assert summary(some) == summary(full) == ([], sorted([nfc, nfd]), [])
    assert AMBIGUOUS in some.refused[nfc][1]
    assert some.checked == {nfc, nfd}


def test_a_plan_of_changes_sees_what_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "real").mkdir(parents=True)
    write(tmp_path / "outside/x.txt", b"x")
    (root / "link").symlink_to(tmp_path / "outside")
    nfc = unicodedata.normalize("NFC", "caf\u00e9.txt")
    write(root / unicodedata.normalize("NFD", nfc), b"sent under its NFC name")
    sent = {p: version_of(1, 1) for p in ["deleted.txt", "real/deleted.txt", "link/x.txt"]}
    sent |= {"busy.txt": version_of(1, 1), nfc: version_of(1, 1)}
    changed = [*sent, "never-sent.txt"]
    _, some = plans(root, sent, changed)
    # Below a symlink is not below input.dir; a file in flight is its transfer's business;
    # a recorded NFC name whose NFD twin is there is not gone.
    assert sorted(some.gone) == ["deleted.txt", "link/x.txt", "real/deleted.txt"]
    assert [c.relative for c, _ in some.send] == [unicodedata.normalize("NFD", nfc)]


# -- the uploader between full scans ------------------------------------------------------


class Scenario:
    """A long-running uploader on the in-memory broker, in this thread (it installs signal
    handlers), while ``act`` runs in another once the first full scan is done."""

    def __init__(self, source: Path, monkeypatch: pytest.MonkeyPatch, **props: str) -> None:
        settings = uploader_settings(
            source,
            **{"scan.interval.ms": "60000", "full.scan.interval.ms": "60000", **props},
        )
        self.broker = MemoryBroker()
        self.transport = MemoryTransport(self.broker)
        self.uploader = Uploader(settings, once=False, transport=self.transport)
        self.full_scans = 0
        full_scan = self.uploader._scan_and_send

        def counted() -> None:
            full_scan()
            self.full_scans += 1

        monkeypatch.setattr(self.uploader, "_scan_and_send", counted)

    def run(self, act: Callable[[], None], timeout: float = 20) -> None:
        failed: list[BaseException] = []

        def drive() -> None:
            try:
                wait(lambda: self.full_scans >= 1, timeout, "the first full scan")
                act()
            except BaseException as exc:
                failed.append(exc)
            finally:
                self.uploader.stop()

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()
        self.uploader.run()
        thread.join(timeout)
        if failed:
            raise failed[0]

    def sent(self, wire: str) -> bool:
        return bool(complete(self.broker, wire))


def wait(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``predicate``; returns when it held (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    return time.monotonic()


def test_a_file_in_a_new_directory_is_sent_without_a_full_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    run = Scenario(source, monkeypatch)
    data = payload(100_000)
    took: list[float] = []

    def act() -> None:
        staged = tmp_path / "staged.bin"
        staged.write_bytes(data)
        (source / "new/deep").mkdir(parents=True)
        start = time.monotonic()
        staged.rename(source / "new/deep/f.bin")
        took.append(wait(lambda: run.sent("new/deep/f.bin"), 10, "the file to be sent") - start)

    run.run(act)
    assert complete(run.broker, "new/deep/f.bin") == [data]
    assert run.full_scans == 1
    assert took[0] < 1.0, took


def test_a_young_file_is_sent_once_old_enough_without_a_full_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    run = Scenario(source, monkeypatch, **{"file.minimum.age.ms": "400"})
    ages: list[float] = []

    def act() -> None:
        (source / "young.bin").write_bytes(payload(10))
        written = (source / "young.bin").stat().st_mtime
        wait(lambda: run.sent("young.bin"), 10, "the file to come of age")
        ages.append(time.time() - written)

    run.run(act)
    assert 0.4 <= ages[0] < 1.5, ages
    assert run.full_scans == 1


class FailOnce(MemoryProducer):
    """Refuses the second record of a path: the file's transfer is abandoned, and the
    file waits to be retried."""

    def __init__(self, broker: MemoryBroker, path: bytes) -> None:
        super().__init__(broker)
        self.path = path
        self.records = 0

    def send(
        self,
        topic: str,
        key: bytes | None,
        headers: OutHeaders,
        value: bytes | None,
        on_ack: AckCallback,
        partition: int | None = None,
    ) -> None:
        if topic == TOPIC and key is not None and key.endswith(self.path):
            self.records += 1
            if self.records == 2:
                raise RuntimeError("refused once")
        super().send(topic, key, headers, value, on_ack, partition)


def test_a_failed_file_is_retried_on_time_without_a_full_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    monkeypatch.setattr(service, "FAILED_RETRY_SECONDS", 0.3)
    run = Scenario(source, monkeypatch)
    monkeypatch.setattr(run.transport, "producer", lambda _o: FailOnce(run.broker, b"/r.bin"))
    data = payload(100_000)  # chunked, not packed with others

    def act() -> None:
        # One event (moved in), so that nothing but the retry looks at it again.
        write(tmp_path / "r.bin", data)
        (tmp_path / "r.bin").rename(source / "r.bin")
        wait(lambda: run.sent("r.bin"), 10, "the retry")

    run.run(act)
    assert complete(run.broker, "r.bin") == [data]
    assert [t.aborted for t in transfers(run.broker).values()] == [True, False]
    assert run.full_scans == 1


def test_without_inotify_the_uploader_scans_every_scan_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable() -> None:
        raise WatchUnavailable("inotify is not available here (test)")

    monkeypatch.setattr(watcher, "_open_inotify", unavailable)
    source = tmp_path / "in"
    source.mkdir()
    run = Scenario(source, monkeypatch, **{"scan.interval.ms": "50"})
    caplog.set_level(logging.INFO)

    def act() -> None:
        write(source / "a.bin", payload(10))
        wait(lambda: run.sent("a.bin"), 10, "the file")
        wait(lambda: run.full_scans >= 4, 10, "more full scans")

    run.run(act)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cannot watch input.dir for changes: inotify is not available here (test); "
        "scanning it in full every 50 ms (scan.interval.ms) instead"
    ]


def test_an_overflow_brings_the_full_scan_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    run = Scenario(source, monkeypatch, **{"scan.interval.ms": "100"})

    def act() -> None:
        w = run.uploader._watcher
        assert w is not None
        w._inotify = InjectOverflow(w._inotify)
        wait(lambda: run.full_scans >= 2, 5, "a full scan after the overflow")

    run.run(act)


def test_the_watch_is_closed_when_the_uploader_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    run = Scenario(source, monkeypatch)
    seen: list[Watcher] = []
    run.run(lambda: seen.append(run.uploader._watcher))
    assert run.uploader._watcher is None
    assert seen[0]._inotify.closed
