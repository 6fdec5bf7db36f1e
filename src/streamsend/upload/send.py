"""``streamsend send``: a one-shot transfer of given files and directories, on the
uploader's own core (chunking, packing, sealing, acknowledgements), then a manifest.

Each PATH is sent under its own base name: a file as ``name``, a directory as the tree
``name/...``. Two PATHs with the same base name are refused before anything is sent.
What was sent is remembered in memory only (no state topic), nothing is renamed or
deleted, and the manifest record is produced once every file is acknowledged.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from streamsend.config.settings import UploaderSettings
from streamsend.errors import UsageError
from streamsend.transport.base import Transport
from streamsend.upload.planning import plan_scan
from streamsend.upload.scanner import Candidate, Walk
from streamsend.upload.service import InFlight, Uploader
from streamsend.wire.protocol import Manifest, ManifestEntry, new_transfer_id

log = logging.getLogger(__name__)

# The properties a send always runs with, whatever the configuration file says.
SEND_PROPERTIES = {
    "file.minimum.age.ms": "0",
    "file.maximum.age.ms": "0",
    "after.upload": "keep",
    "generate.test.file.bytes": "0",
}
# "Now" for the age rules: every file given is old enough, even one dated in the future.
_ANY_AGE_NS = 1 << 62


def send_roots(paths: Sequence[Path]) -> dict[str, Path]:
    """Each PATH by the base name it is sent under; refuses missing paths and clashes."""
    roots: dict[str, Path] = {}
    for given in paths:
        path = given.expanduser().absolute()
        name = path.resolve().name if path.name in ("", ".", "..") else path.name
        if not name:
            raise UsageError(f"cannot send {str(given)!r}: it has no name to send it under")
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise UsageError(f"cannot send {str(given)!r}: {exc.strerror}") from None
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise UsageError(f"cannot send {str(given)!r}: not a regular file or directory")
        if name in roots:
            raise UsageError(
                f"{str(roots[name])!r} and {str(given)!r} would both be sent as {name!r}; "
                "send them separately or rename one"
            )
        roots[name] = path
    return roots


class _Roots(Walk):
    """The given files and directory trees, each below its base name."""

    def __init__(self, roots: dict[str, Path]) -> None:
        super().__init__(Path("/"))
        self.roots = roots

    def __iter__(self) -> Iterator[Candidate]:
        for name, path in self.roots.items():
            st = os.stat(path)
            if stat.S_ISREG(st.st_mode):
                yield Candidate(
                    name, path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, st.st_ctime_ns
                )
                continue
            walk = Walk(path)
            for cand in walk:
                yield Candidate(
                    f"{name}/{cand.relative}",
                    cand.path,
                    cand.size,
                    cand.mtime_ns,
                    cand.inode,
                    cand.mode,
                    cand.ctime_ns,
                )
            self.unlistable += [f"{name}/{u}".rstrip("/") for u in walk.unlistable]


class Sender(Uploader):
    """An uploader for one send: ``input.dir`` is a private work directory (its lock and
    key file); the files come from ``roots``."""

    keeps_state = False

    def __init__(
        self,
        settings: UploaderSettings,
        roots: dict[str, Path],
        transport: Transport | None = None,
    ) -> None:
        super().__init__(settings, once=True, transport=transport)
        self.roots = roots
        self.entries: list[ManifestEntry] = []
        self.manifest: Manifest | None = None

    def _scan_and_send(self) -> None:
        walk = _Roots(self.roots)
        now = _ANY_AGE_NS
        plan = plan_scan(self.input_dir, walk, self.rules, {}, self.inflight, lambda _: False, now)
        self._report_refused(plan.refused)
        if not plan.send and not plan.refused:
            raise UsageError("nothing to send: no regular file in the given paths")
        self._send_batch(plan.send)

    def _complete(self, inf: InFlight) -> None:
        ok = inf.error is None and inf.aborted is None
        super()._complete(inf)
        if ok:
            size = inf.candidate.size
            self.entries.append(ManifestEntry(inf.transfer, inf.wire, size, inf.sha256))

    def _loop(self) -> None:
        super()._loop()
        self._drain()
        if self.producer is None or self.stats.failed or self._stop:
            return  # dry run, or not everything arrived: no manifest
        seal = self.encoder.new_file()
        send = seal.transfer if seal else new_transfer_id()
        name = self.settings.uploader_name
        files = tuple(sorted(self.entries, key=lambda e: e.path))
        manifest = Manifest(send, name, files)
        key, headers, value = self.encoder.encode(manifest, self.codec, seal)
        acked: list[str | None] = []
        partition = self.encoder.partition(name, send, self.partitions)
        self._send_record(key, headers, value, partition, acked.append)
        self.producer.flush(300)
        if not acked or acked[0] is not None:
            why = acked[0] if acked else "not acknowledged"
            self.stats.failed["(manifest)"] = str(why)
            return
        self.manifest = manifest
        log.info("send %s: manifest of %d file(s) produced", send, len(files))
