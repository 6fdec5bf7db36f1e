"""The downloader's filesystem adapter: staged bytes, the ledger file, delivery, rejects.

Layout inside ``output.dir`` (``.streamsend`` cannot clash with an uploader's folder,
whose name may not start with a dot)::

    .streamsend/                        0700, ours: refused if a symlink or another user's
    .streamsend/ledger                  what is durably staged, being delivered, finished
    .streamsend/downloader.lock         one downloader per output.dir
    .streamsend/staging/<transfer>.part bytes received so far (sparse, written in place)
    .streamsend/rejected/<transfer>.data files that failed verification, with .reason.json
    <uploader>/<path>                   delivered files, renamed into place atomically

Everything is reached through directory file descriptors with ``O_NOFOLLOW``: a symlink
planted anywhere in ``output.dir`` cannot lead a write outside it. At most ``max_open``
staged files are open at once (least recently used are closed and reopened on demand),
so thousands of concurrent transfers never exhaust file descriptors.

Every durable step calls ``faults(step)`` first: a no-op in production, the seam through
which tests stop the downloader exactly before that step.

Three things keep the write path fast without weakening any of that (issue 8): a
transfer's running SHA-256 is computed on a worker thread (``hashing.py``) while this
thread polls and writes; bytes that arrived past a gap are hashed (read back by that
worker) as soon as the gap closes, so verification re-reads nothing; and a large staged
file is written behind and dropped behind, window by window (``sync_file_range`` then
``POSIX_FADV_DONTNEED``), so the page cache it holds, and the work left for the fsync of a
checkpoint or delivery, stay bounded whatever the file's size. None is a durable step:
durability still comes only from the fsync or syncfs of :meth:`StagingArea.sync`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import resource
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from streamsend.download import ledger
from streamsend.download.hashing import (
    READ_BLOCK,
    HashWorker,
    LaggingHash,
    StagedBytesMissing,
)
from streamsend.download.reassembly import RangeSet, Transfer
from streamsend.errors import EnvironmentProblem
from streamsend.wire.paths import UnsafePath

log = logging.getLogger(__name__)

Faults = Callable[[str], None]
DEFAULT_MAX_OPEN = 128
LEDGER_COMPACT_BYTES = 32 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
# From this many files (or directories) on, one syncfs replaces their fsyncs. Below it a
# few fsyncs are cheaper and do not flush what other processes wrote to the filesystem.
SYNCFS_FROM = 8
_libc = ctypes.CDLL(None, use_errno=True)
_libc_syncfs = getattr(_libc, "syncfs", None)
# Write-behind: each time a write completes a window of a staged file, the kernel is told
# to start writing that window to disk, and the window before it, written by now, is
# waited for and dropped from the page cache. A multi-GiB file then holds at most two
# windows of dirty or cached pages instead of all of itself: the fsync of a checkpoint or
# delivery finds little left to do, and new page-cache pages, slow to get on a virtual
# machine whose free memory went back to its host, are recycled instead.
WRITE_BEHIND_WINDOW = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE, _SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
_libc_sync_file_range = getattr(_libc, "sync_file_range", None)
if _libc_sync_file_range is not None:
    _libc_sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _libc_sync_file_range.restype = ctypes.c_int
# sync_file_range answers these where a filesystem or file cannot do it: not an error of
# the bytes, so write-behind is only switched off.
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESPIPE)


def _no_faults(_step: str) -> None:
    return None


class VerificationFailed(Exception):
    """The rebuilt bytes do not match what the uploader sent."""


class DiskFull(Exception):
    """The output filesystem has no room for what we must write now."""

    def __init__(self, needed: int, what: str, transfer: str | None = None) -> None:
        super().__init__(f"{needed} more bytes needed for {what}")
        self.needed = needed
        self.what = what
        self.transfer = transfer  # the transfer whose bytes are waiting, if one is


class Unstorable(Exception):
    """The filesystem cannot hold bytes where a record puts them (e.g. beyond its
    maximum file size): the record's claim is refused, not the disk."""


def _fsync_dir(fd: int) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        os.fsync(fd)


def _own_directory(parent_fd: int, name: str, where: str) -> int:
    """Open (creating it 0700) a bookkeeping directory that must be ours: not a symlink,
    owned by this user, closed to others."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise EnvironmentProblem(
                f"{where} is a symlink or not a directory; remove it (Streamsend keeps its "
                "bookkeeping there and never follows links)"
            ) from exc
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise EnvironmentProblem(
            f"{where} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}); "
            "remove it or run as its owner"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o700)
    return fd


class StagingArea:
    def __init__(
        self, output_dir: Path, faults: Faults = _no_faults, max_open: int = DEFAULT_MAX_OPEN
    ) -> None:
        self.output_dir = output_dir
        self.faults = faults
        # Staged files may use a quarter of the process's descriptors, leaving the rest
        # to librdkafka's sockets, directories being delivered into, and the ledger.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_open = max(4, min(max_open, soft // 4)) if soft > 0 else max_open
        root = output_dir / ".streamsend"
        self.rejected_dir = root / "rejected"
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._hashes = HashWorker()
        self._write_behind = _libc_sync_file_range is not None
        self._behind: dict[str, int] = {}  # transfer -> staged bytes below it dropped
        self._ledger_pending: list[str] = []
        self._dirs_to_sync: dict[tuple[str, ...], int] = {}
        opened: list[int] = []
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            self._out_fd = os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            opened.append(self._out_fd)
            self.root_fd = _own_directory(self._out_fd, ".streamsend", str(root))
            opened.append(self.root_fd)
            self._staging_fd = _own_directory(self.root_fd, "staging", str(root / "staging"))
            opened.append(self._staging_fd)
            self._rejected_fd = _own_directory(self.root_fd, "rejected", str(self.rejected_dir))
            opened.append(self._rejected_fd)
            probe = f".probe-{os.getpid()}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600,
                             dir_fd=self._staging_fd))  # fmt: skip
            os.unlink(probe, dir_fd=self._staging_fd)
            self._ledger_fd = os.open(
                "ledger",
                os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self.root_fd,
            )
        except (EnvironmentProblem, OSError) as exc:
            for fd in opened:
                os.close(fd)
            if isinstance(exc, EnvironmentProblem):
                raise
            raise EnvironmentProblem(
                f"output.dir {str(output_dir)!r} is not writable: {exc.strerror or exc}"
            ) from exc

    # -- staged files ------------------------------------------------------------

    def _fd(self, transfer: str, create: bool = False) -> int:
        """The open descriptor of a staged file; only a write may create the file (a
        ``.part`` that vanished must not come back empty)."""
        fd = self._fds.get(transfer)
        if fd is not None:
            self._fds.move_to_end(transfer)
            return fd
        while len(self._fds) >= self.max_open:
            os.close(self._fds.popitem(last=False)[1])
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        fd = self._open(f"{transfer}.part", flags, 0o600, self._staging_fd)
        self._fds[transfer] = fd
        return fd

    def _open(self, name: str, flags: int, mode: int, dir_fd: int) -> int:
        """os.open; when the process is out of descriptors (something else holds many
        too), give back half of the staged files' and try once more."""
        try:
            return os.open(name, flags, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in _NO_DESCRIPTORS or not self._fds:
                raise
            for _ in range(max(1, len(self._fds) // 2)):
                os.close(self._fds.popitem(last=False)[1])
            return os.open(name, flags, mode, dir_fd=dir_fd)

    def _close(self, transfer: str) -> None:
        self._behind.pop(transfer, None)
        fd = self._fds.pop(transfer, None)
        if fd is not None:
            os.close(fd)

    def open_files(self) -> int:
        return len(self._fds)

    def write(self, t: Transfer, offset: int, data: bytes | memoryview) -> None:
        """Store bytes of ``t`` at ``offset``. Raises DiskFull or Unstorable. From now
        on the transfer's running hash is computed on the hash worker (see hashing.py):
        recording the bytes costs this thread a queue append, not their SHA-256."""
        view = memoryview(data)
        written = 0
        try:
            fd = self._fd(t.transfer, create=True)
            while written < len(view):
                self.faults("write")
                written += os.pwrite(fd, view[written:], offset + written)
        except OSError as exc:
            raise self._write_error(exc, t, offset, len(view)) from exc
        if not isinstance(t.hasher, LaggingHash):
            t.hasher = self._hashes.new_hash(t.hasher)
        # Bytes that arrived before the gap in front of them closed are hashed now, while
        # they are still cached, instead of all at once by verify(): a file whose chunks
        # come from several partitions is then hashed as it arrives too.
        start, stop = t.unhashed()
        if stop > start:
            self._hash_staged(t, fd, stop)
        try:
            self._write_behind_windows(t, fd, offset, offset + written)
        except OSError as exc:
            raise self._write_error(exc, t, offset, len(view)) from exc

    def _write_error(self, exc: OSError, t: Transfer, offset: int, size: int) -> Exception:
        """What an error storing ``size`` bytes of ``t`` at ``offset`` means here."""
        if exc.errno in _NO_SPACE:
            needed = max(size, t.declared_size - t.received.total())
            return DiskFull(needed, repr(t.label), t.transfer)
        if exc.errno in (errno.EFBIG, errno.EINVAL, errno.EOVERFLOW):
            return Unstorable(f"cannot write at offset {offset}: {exc.strerror}")
        return exc

    def _hash_staged(self, t: Transfer, fd: int, upto: int) -> bool:
        """Feed the running hash of ``t`` from its staged bytes up to ``upto``: read back
        by the hash worker when there is a block or more (and a descriptor to spare),
        else here. False when the staged file ends before ``upto`` (a read-back by the
        worker reports that at ``hexdigest()``: StagedBytesMissing)."""
        if not isinstance(t.hasher, LaggingHash):
            t.hasher = self._hashes.new_hash(t.hasher)
        if upto - t.hashed_upto >= READ_BLOCK:
            try:
                t.hasher.update_from(fd, t.hashed_upto, upto - t.hashed_upto)
            except OSError as exc:
                if exc.errno not in _NO_DESCRIPTORS:
                    raise
            else:
                t.hashed_upto = upto
                return True
        while t.hashed_upto < upto:
            block = os.pread(fd, min(READ_BLOCK, upto - t.hashed_upto), t.hashed_upto)
            if not block:
                return False
            t.hasher.update(block)
            t.hashed_upto += len(block)
        return True

    def _write_behind_windows(self, t: Transfer, fd: int, start: int, end: int) -> None:
        """Start writing back the window that bytes ``[start, end)`` completed; wait for,
        then drop from the cache, every window both hashed (nothing reads it back) and a
        window behind the newest bytes (its write-back had time to run). Raises OSError:
        an error the wait reports is consumed from the file (a later fsync would not
        report it again), so it must fail the write like an error of pwrite itself."""
        if not self._write_behind or _libc_sync_file_range is None:
            return
        window = WRITE_BEHIND_WINDOW
        boundary = end - end % window
        limit = min(t.hashed_upto, max(end, t.received.last_end()) - window)
        limit -= limit % window
        done = self._behind.get(t.transfer, 0)
        try:
            if boundary > start:
                self._sync_file_range(fd, boundary - window, window, _SYNC_FILE_RANGE_WRITE)
            for behind in range(done, limit, window):
                self._sync_file_range(
                    fd,
                    behind,
                    window,
                    _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE
                    | _SYNC_FILE_RANGE_WAIT_AFTER,
                )  # fmt: skip
                os.posix_fadvise(fd, behind, window, os.POSIX_FADV_DONTNEED)
                self._behind[t.transfer] = behind + window
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self._write_behind = False
            log.debug("write-behind is off: sync_file_range: %s", exc.strerror)

    @staticmethod
    def _sync_file_range(fd: int, offset: int, length: int, flags: int) -> None:
        assert _libc_sync_file_range is not None
        if _libc_sync_file_range(fd, offset, length, flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    def open_staged(self, transfer: str) -> int:
        """A new read-only descriptor of a staged file, for a destination that copies it
        elsewhere (S3); the caller closes it."""
        return self._open(
            f"{transfer}.part", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0, self._staging_fd
        )

    def staged_size(self, transfer: str) -> int:
        return os.stat(f"{transfer}.part", dir_fd=self._staging_fd, follow_symlinks=False).st_size

    def verify(self, t: Transfer) -> None:
        """Finish the SHA-256 from the staged bytes, compare, and set the file's mode and
        mtime. Raises VerificationFailed."""
        end = t.end
        assert end is not None
        # Created here for an empty file (no chunk ever wrote it); a non-empty file whose
        # bytes vanished fails the hash below.
        fd = self._fd(t.transfer, create=True)
        size = os.fstat(fd).st_size
        if size > end.size:
            raise VerificationFailed(f"{size} bytes staged, the uploader sent {end.size}")
        if size < end.size:
            os.ftruncate(fd, end.size)  # an empty file or trailing gap is not a short read
        short = VerificationFailed("staged data is shorter than the file")
        if not self._hash_staged(t, fd, end.size):
            raise short
        try:
            digest = t.hasher.hexdigest()
        except StagedBytesMissing as exc:
            raise short from exc
        if digest != end.sha256:
            raise VerificationFailed(f"SHA-256 mismatch: expected {end.sha256}, got {digest}")
        os.fchmod(fd, end.mode & 0o777)
        os.utime(fd, ns=(end.mtime_ns, end.mtime_ns))

    def sync(self, transfers: Iterable[Transfer]) -> None:
        """Make the staged bytes of ``transfers`` durable: an fsync each, or one syncfs
        of the output filesystem for a group of at least ``SYNCFS_FROM``. Raises
        DiskFull."""
        group = list(transfers)
        if len(group) >= SYNCFS_FROM and self._syncfs("fsync"):
            return
        for t in group:
            try:
                fd = self._fd(t.transfer)
                self.faults("fsync")
                os.fsync(fd)
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    raise DiskFull(4096, f"flushing {t.label!r}") from exc
                raise

    def _syncfs(self, step: str) -> bool:
        """One syncfs(2) of the output filesystem (Linux): it makes every write and
        directory entry on it durable, so a group costs one call instead of an fsync
        per file and per directory. False where the call does not exist."""
        if _libc_syncfs is None:
            return False
        self.faults(step)
        if _libc_syncfs(self._staging_fd) != 0:
            code = ctypes.get_errno()
            if code in _NO_SPACE:
                raise DiskFull(4096, "flushing the output filesystem")
            raise OSError(code, os.strerror(code))
        return True

    # -- the ledger ----------------------------------------------------------------

    def read_ledger(self) -> list[str]:
        with os.fdopen(os.dup(self._ledger_fd), "r", encoding="utf-8", errors="replace") as fp:
            fp.seek(0)
            return fp.read().splitlines()

    def append(self, lines: Iterable[str]) -> None:
        """Queue ledger entries; they are durable after :meth:`sync_ledger`."""
        self._ledger_pending.extend(lines)

    def sync_ledger(self) -> None:
        """Append the queued entries and fsync. On failure the ledger is cut back to what
        it was, so a half-written line never precedes later entries. Raises DiskFull."""
        if not self._ledger_pending:
            return
        data = ("\n".join(self._ledger_pending) + "\n").encode()
        before = os.fstat(self._ledger_fd).st_size
        try:
            self.faults("ledger-write")
            view = memoryview(data)
            while view:
                view = view[os.write(self._ledger_fd, view) :]
            self.faults("ledger-fsync")
            os.fsync(self._ledger_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._ledger_fd, before)
            if exc.errno in _NO_SPACE:
                raise DiskFull(len(data), "the ledger") from exc
            raise
        self._ledger_pending.clear()

    def ledger_size(self) -> int:
        return os.fstat(self._ledger_fd).st_size

    def rewrite_ledger(self, lines: list[str]) -> None:
        """Replace the ledger by ``lines`` atomically (temporary file, fsync, rename)."""
        tmp = "ledger.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.root_fd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=self.root_fd)  # fmt: skip
        try:
            data = memoryview(("\n".join(lines) + "\n").encode() if lines else b"")
            self.faults("ledger-write")
            while data:
                data = data[os.write(fd, data) :]
            self.faults("ledger-fsync")
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.root_fd)
            if exc.errno in _NO_SPACE:
                raise DiskFull(len(data), "the ledger") from exc
            raise
        os.close(fd)
        self.faults("rename")
        os.rename(tmp, "ledger", src_dir_fd=self.root_fd, dst_dir_fd=self.root_fd)
        self.faults("fsync-dir")
        _fsync_dir(self.root_fd)
        new_fd = os.open(
            "ledger", os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.root_fd
        )
        os.close(self._ledger_fd)
        self._ledger_fd = new_fd

    # -- delivering --------------------------------------------------------------

    def place(self, t: Transfer, parts: tuple[str, ...]) -> Path:
        """Rename a verified, fsynced staged file to its final path; the directory entry
        is made durable by :meth:`sync_directories`. Raises UnsafePath or DiskFull."""
        self._close(t.transfer)
        full = (t.uploader, *parts)
        parent_fd = self._dirs_to_sync.get(full[:-1])
        if parent_fd is None:
            if len(self._dirs_to_sync) >= self.max_open:
                # Each directory is fsynced once per round; a round into very many
                # directories syncs them early instead of holding a descriptor each.
                self.sync_directories()
            parent_fd = self._open_parent(full)
            self._dirs_to_sync[full[:-1]] = parent_fd
        try:
            self.faults("rename")
            os.rename(
                f"{t.transfer}.part", full[-1], src_dir_fd=self._staging_fd, dst_dir_fd=parent_fd
            )
        except (IsADirectoryError, NotADirectoryError) as exc:
            raise UnsafePath(f"final path is a directory: {exc.strerror}") from exc
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise DiskFull(4096, f"renaming {t.label!r}") from exc
            raise
        return self.output_dir.joinpath(*full)

    def sync_directories(self) -> None:
        """Make durable the renames into every directory since the last call: an fsync
        of each directory, or one syncfs for at least ``SYNCFS_FROM`` of them."""
        if len(self._dirs_to_sync) < SYNCFS_FROM or not self._syncfs("fsync-dir"):
            for fd in self._dirs_to_sync.values():
                self.faults("fsync-dir")
                _fsync_dir(fd)
        for fd in self._dirs_to_sync.values():
            os.close(fd)
        self._dirs_to_sync.clear()

    def _open_parent(self, parts: tuple[str, ...]) -> int:
        """Open (creating as needed) the directory that will hold parts[-1], refusing
        to pass through a symlink or a non-directory."""
        fd = self._open(".", _DIR_FLAGS, 0, self._out_fd)
        try:
            for depth, part in enumerate(parts[:-1]):
                try:
                    next_fd = self._open(part, _DIR_FLAGS, 0, fd)
                except FileNotFoundError:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                    # The new directory's entry is durable once its parent is synced:
                    # the parent joins the directories of this round.
                    if parts[:depth] not in self._dirs_to_sync:
                        self._dirs_to_sync[parts[:depth]] = os.dup(fd)
                    next_fd = self._open(part, _DIR_FLAGS, 0, fd)
                os.close(fd)
                fd = next_fd
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_SPACE:  # creating a directory: retried once there is room
                raise DiskFull(4096, "a directory of " + repr("/".join(parts))) from exc
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(
                    f"a directory on the way to {'/'.join(parts)!r} is a symlink or a file"
                ) from exc
            raise
        return fd

    # -- giving up ---------------------------------------------------------------

    def remove(self, transfer: str) -> None:
        """Delete a transfer's staged bytes (abandoned, expired, refused)."""
        self._close(transfer)
        with contextlib.suppress(FileNotFoundError):
            self.faults("unlink")
            os.unlink(f"{transfer}.part", dir_fd=self._staging_fd)

    def reject(self, t: Transfer, reason: str) -> Path:
        """Keep a failed transfer's bytes aside with the reason; never at its final path."""
        self._close(t.transfer)
        name = f"{t.transfer}.data"
        with contextlib.suppress(FileNotFoundError):
            self.faults("rename")
            os.rename(
                f"{t.transfer}.part", name, src_dir_fd=self._staging_fd,
                dst_dir_fd=self._rejected_fd,
            )  # fmt: skip
        note = {"uploader": t.uploader, "path": t.path, "reason": reason, "time": time.time()}
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(OSError):  # the reason is a courtesy; the log has it too
            fd = os.open(f"{t.transfer}.reason.json", flags, 0o600, dir_fd=self._rejected_fd)
            try:
                os.write(fd, json.dumps(note).encode())
            finally:
                os.close(fd)
        return self.rejected_dir / name

    def clean_rejected(self, max_age_seconds: float) -> int:
        """Delete rejected files older than ``max_age_seconds``; returns how many."""
        now = time.time()
        removed = 0
        for name in os.listdir(self._rejected_fd):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=self._rejected_fd, follow_symlinks=False)
                if now - st.st_mtime > max_age_seconds:
                    os.unlink(name, dir_fd=self._rejected_fd)
                    removed += name.endswith(".data")
        return removed

    # -- recovery ------------------------------------------------------------------

    def staged_names(self) -> list[str]:
        """Transfer ids with a ``.part`` file in staging."""
        return [n[:-5] for n in os.listdir(self._staging_fd) if n.endswith(".part")]

    def recover(self) -> ledger.LedgerState:
        """Rebuild the state a previous run left, settle what a crash interrupted, and
        rewrite the ledger compactly.

        - a transfer being delivered whose ``.part`` is still in staging was verified and
          fsynced but not renamed: it is staged again, complete, to be delivered; one
          whose ``.part`` is gone was renamed;
        - a staged transfer whose ``.part`` is gone was dropped (aborted, expired,
          rejected) before the ledger said so: forget it; ranges past the end of its
          ``.part`` are not trusted;
        - a ``.part`` the ledger does not know never had a durable range: delete it.
        """
        state, bad = ledger.fold(self.read_ledger())
        if bad:
            log.warning("ledger: skipped %d unreadable entr(y/ies), e.g. a torn last line", bad)
        on_disk = set(self.staged_names())
        for transfer, t in state.delivering.items():
            if transfer in on_disk and t.end is not None:
                # Verified and fsynced, not renamed yet: it is delivered again through the
                # normal path (verified once more from its bytes, which costs only a read).
                t.received = RangeSet([(0, t.end.size)])
                t.redelivery = True
                state.staged[transfer] = t
                state.done.pop(transfer, None)
        state.delivering.clear()
        for transfer, t in list(state.staged.items()):
            if transfer not in on_disk:
                del state.staged[transfer]
                continue
            size = self.staged_size(transfer)
            if t.received.last_end() > size:
                t.received = RangeSet(
                    [(s, min(e, size)) for s, e in t.received.as_list() if s < size]
                )
            on_disk.discard(transfer)
        for orphan in on_disk:
            self.remove(orphan)
        for name in os.listdir(self._staging_fd):
            if not name.endswith(".part"):  # a probe or temporary file of a crashed run
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self._staging_fd)
        try:
            self.rewrite_ledger(ledger.compact(state))
        except DiskFull:
            # The ledger as it is still describes this state (recovery replays the same
            # way): compacting it can wait until there is room.
            log.warning("output.dir is full: the ledger is compacted later")
        return state

    # -- space ---------------------------------------------------------------------

    def free_bytes(self) -> int:
        st = os.fstatvfs(self._staging_fd)
        return st.f_bavail * st.f_frsize

    def total_bytes(self) -> int:
        st = os.fstatvfs(self._staging_fd)
        return st.f_blocks * st.f_frsize

    def close(self) -> None:
        """Close every descriptor and stop the hash worker. No durable step: safe after a
        simulated crash too."""
        self._hashes.close()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for fd in self._dirs_to_sync.values():
            os.close(fd)
        self._dirs_to_sync.clear()
        for fd in (self._ledger_fd, self._staging_fd, self._rejected_fd, self.root_fd):
            os.close(fd)
        os.close(self._out_fd)
