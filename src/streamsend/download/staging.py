"""The downloader's filesystem adapter: staging, verification and atomic delivery.

Layout inside ``output.dir`` (the ``.streamsend`` folder cannot clash with an
uploader's folder, whose name may not start with a dot)::

    .streamsend/staging/<transfer>.part   bytes received so far (sparse, written in place)
    .streamsend/staging/<transfer>.json   metadata + byte ranges that are durably on disk
    .streamsend/done/<transfer>           transfers already delivered (replays are ignored)
    .streamsend/rejected/<transfer>.data  files that failed verification, with .reason.json
    <uploader>/<path>                     delivered files, renamed into place atomically

A file reaches its final path only by ``rename`` after its SHA-256 matched and its data
and metadata were fsynced. Final paths are reached by walking directory file
descriptors with ``O_NOFOLLOW``, so a symlink inside ``output.dir`` cannot lead out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamsend.download.reassembly import RangeSet, TransferProgress
from streamsend.errors import EnvironmentProblem
from streamsend.wire.paths import UnsafePath
from streamsend.wire.protocol import End

log = logging.getLogger(__name__)

HASH_BLOCK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class VerificationFailed(Exception):
    """The rebuilt bytes do not match what the uploader sent."""


class DiskFull(Exception):
    """The output filesystem has no room for the bytes we must write now."""

    def __init__(self, needed: int, what: str) -> None:
        super().__init__(f"{needed} more bytes needed for {what}")
        self.needed = needed
        self.what = what


class Unstorable(Exception):
    """The filesystem cannot hold bytes where a record puts them (e.g. beyond its
    maximum file size): the record's claim is refused, not the disk."""


def _no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class StagedFile:
    progress: TransferProgress
    fd: int
    hasher: Any = field(default_factory=hashlib.sha256)
    hashed_upto: int = 0  # bytes [0, hashed_upto) are in hasher
    dirty: bool = True
    last_activity: float = field(default_factory=time.time)


def _fsync_dir(fd: int) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        os.fsync(fd)


class StagingArea:
    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        root = self.root = output_dir / ".streamsend"
        self.staging_dir = root / "staging"
        self.done_dir = root / "done"
        self.rejected_dir = root / "rejected"
        try:
            for d in (self.staging_dir, self.done_dir, self.rejected_dir):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.staging_dir / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise EnvironmentProblem(
                f"output.dir {str(output_dir)!r} is not writable: {exc.strerror or exc}"
            ) from exc
        self._out_fd = os.open(output_dir, _DIR_FLAGS)
        self._staging_fd = os.open(self.staging_dir, _DIR_FLAGS)
        self.files: dict[str, StagedFile] = {}
        self.done: set[str] = {p.name for p in self.done_dir.iterdir()}

    # -- receiving ---------------------------------------------------------------

    def open(self, progress: TransferProgress) -> StagedFile:
        staged = self.files.get(progress.transfer)
        if staged is None:
            fd = os.open(
                f"{progress.transfer}.part",
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
                dir_fd=self._staging_fd,
            )
            staged = StagedFile(progress, fd)
            self.files[progress.transfer] = staged
        return staged

    def write(self, staged: StagedFile, offset: int, data: bytes) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.pwrite(staged.fd, view[written:], offset + written)
        except OSError as exc:
            if _no_space(exc):
                p = staged.progress
                needed = max(len(data), p.declared_size - p.received.total())
                raise DiskFull(needed, f"{p.uploader}/{p.path}") from exc
            if exc.errno in (errno.EFBIG, errno.EINVAL, errno.EOVERFLOW):
                raise Unstorable(f"cannot write at offset {offset}: {exc.strerror}") from exc
            raise
        if offset == staged.hashed_upto:
            staged.hasher.update(data)
            staged.hashed_upto += len(data)
        staged.dirty = True
        staged.last_activity = time.time()

    def free_bytes(self) -> int:
        st = os.statvfs(self.staging_dir)
        return st.f_bavail * st.f_frsize

    def checkpoint(self) -> None:
        """Make every byte received so far durable, then record which ranges are.
        Raises DiskFull when a sidecar cannot be written (the caller must not commit)."""
        changed = False
        for staged in self.files.values():
            if not staged.dirty:
                continue
            os.fsync(staged.fd)
            try:
                self._write_sidecar(staged)
            except OSError as exc:
                if _no_space(exc):
                    raise DiskFull(4096, "a staging record") from exc
                raise
            staged.dirty = False
            changed = True
        if changed:
            _fsync_dir(self._staging_fd)

    def _write_sidecar(self, staged: StagedFile) -> None:
        p = staged.progress
        doc = {
            "transfer": p.transfer,
            "uploader": p.uploader,
            "path": p.path,
            "declared_size": p.declared_size,
            "ranges": p.received.as_list(),
        }
        tmp = self.staging_dir / f"{p.transfer}.json.tmp"
        with tmp.open("w", encoding="utf-8") as fp:
            json.dump(doc, fp)
            fp.flush()
            os.fsync(fp.fileno())
        tmp.replace(self.staging_dir / f"{p.transfer}.json")

    def recover(self) -> Iterator[StagedFile]:
        """Reopen transfers a previous run left in staging (only their durable ranges)."""
        for sidecar in sorted(self.staging_dir.glob("*.json")):
            try:
                doc = json.loads(sidecar.read_text(encoding="utf-8"))
                progress = TransferProgress(
                    transfer=doc["transfer"],
                    uploader=doc["uploader"],
                    path=doc["path"],
                    declared_size=int(doc["declared_size"]),
                    received=RangeSet([(int(s), int(e)) for s, e in doc["ranges"]]),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("discarding unreadable staging record %s: %s", sidecar.name, exc)
                self._remove_staging(sidecar.stem)
                continue
            # The expiry clock restarts: while this downloader was down, the rest of the
            # file may have been waiting on the topic, so silence then proves nothing.
            staged = self.open(progress)
            staged.dirty = False
            yield staged
        # Data files without a sidecar never had a durable range: nothing to keep.
        for part in self.staging_dir.glob("*.part"):
            if part.stem not in self.files:
                part.unlink(missing_ok=True)

    # -- delivering --------------------------------------------------------------

    def finalize(self, staged: StagedFile, end: End, parts: tuple[str, ...]) -> Path:
        """Verify, fix metadata, fsync and rename into place. Raises VerificationFailed
        or UnsafePath; the caller then rejects the file."""
        fd = staged.fd
        size = os.fstat(fd).st_size
        if size > end.size:
            raise VerificationFailed(f"{size} bytes staged, the uploader sent {end.size}")
        os.ftruncate(fd, end.size)  # an empty file or trailing gap is not a short read
        while staged.hashed_upto < end.size:
            block = os.pread(fd, min(HASH_BLOCK, end.size - staged.hashed_upto), staged.hashed_upto)
            if not block:
                raise VerificationFailed("staged data is shorter than the file")
            staged.hasher.update(block)
            staged.hashed_upto += len(block)
        digest = staged.hasher.hexdigest()
        if digest != end.sha256:
            raise VerificationFailed(f"SHA-256 mismatch: expected {end.sha256}, got {digest}")
        os.fchmod(fd, end.mode & 0o777)
        os.utime(fd, ns=(end.mtime_ns, end.mtime_ns))
        os.fsync(fd)
        parent_fd = self._open_parent((end.uploader, *parts))
        try:
            name = parts[-1]
            try:
                os.rename(
                    f"{staged.progress.transfer}.part",
                    name,
                    src_dir_fd=self._staging_fd,
                    dst_dir_fd=parent_fd,
                )
            except (IsADirectoryError, NotADirectoryError) as exc:
                raise UnsafePath(f"final path is a directory: {exc.strerror}") from exc
            _fsync_dir(parent_fd)
        finally:
            os.close(parent_fd)
        self._mark_done(staged.progress.transfer)
        return self.output_dir.joinpath(end.uploader, *parts)

    def _open_parent(self, parts: tuple[str, ...]) -> int:
        """Open (creating as needed) the directory that will hold parts[-1], refusing
        to pass through a symlink or a non-directory."""
        fd = os.dup(self._out_fd)
        try:
            for part in parts[:-1]:
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except OSError as exc:
            os.close(fd)
            if _no_space(exc):  # creating a directory: retried once there is room
                raise DiskFull(4096, "a directory of " + "/".join(parts)) from exc
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(
                    f"a directory on the way to {'/'.join(parts)!r} is a symlink or a file"
                ) from exc
            raise
        return fd

    def _mark_done(self, transfer: str) -> None:
        """Remember a finished transfer durably, so replayed records of it are ignored."""
        staged = self.files.pop(transfer, None)
        if staged is not None:
            os.close(staged.fd)
        self._remove_staging(transfer)
        self.done.add(transfer)
        try:
            (self.done_dir / transfer).write_bytes(b"")
            done_fd = os.open(self.done_dir, _DIR_FLAGS)
            try:
                _fsync_dir(done_fd)
            finally:
                os.close(done_fd)
        except OSError as exc:
            # Only costs a harmless partial re-staging of a replay, which later expires.
            log.warning("could not record transfer %s as done: %s", transfer, exc.strerror)

    # -- giving up ---------------------------------------------------------------

    def discard(self, transfer: str, remember: bool = False) -> None:
        """Drop a transfer's staging data; ``remember`` ignores its later records too."""
        if remember:
            self._mark_done(transfer)
            return
        staged = self.files.pop(transfer, None)
        if staged is not None:
            os.close(staged.fd)
        self._remove_staging(transfer)

    def reject(self, transfer: str, uploader: str, path: str, reason: str) -> Path:
        target = self.rejected_dir / f"{transfer}.data"
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{transfer}.part", target, src_dir_fd=self._staging_fd)
        note = {"uploader": uploader, "path": path, "reason": reason, "time": time.time()}
        (self.rejected_dir / f"{transfer}.reason.json").write_text(
            json.dumps(note), encoding="utf-8"
        )
        self._mark_done(transfer)  # never rebuild the same failed attempt from a replay
        return target

    def _remove_staging(self, transfer: str) -> None:
        for name in (f"{transfer}.json", f"{transfer}.json.tmp", f"{transfer}.part"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self._staging_fd)

    def expire(self, max_idle_seconds: float) -> list[TransferProgress]:
        """Drop unfinished transfers idle for longer than the expiry; forget old done markers."""
        now = time.time()
        expired = [
            s.progress for s in self.files.values() if now - s.last_activity > max_idle_seconds
        ]
        for progress in expired:
            self.discard(progress.transfer)
        for marker in list(self.done_dir.iterdir()):
            with contextlib.suppress(FileNotFoundError):
                if now - marker.stat().st_mtime > max_idle_seconds:
                    marker.unlink()
                    self.done.discard(marker.name)
        return expired

    def close(self) -> None:
        for staged in self.files.values():
            os.close(staged.fd)
        self.files.clear()
        os.close(self._staging_fd)
        os.close(self._out_fd)
