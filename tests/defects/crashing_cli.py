"""``python crashing_cli.py ARGS...`` runs ``streamsend ARGS...`` with faults injected at
chosen filesystem calls, so crash windows can be hit deterministically.

Watched calls (os.<name>): rename, replace, link, unlink, remove, rmdir, fsync, fdatasync,
pwrite, pwritev. Selected by environment variables (never STREAMSEND_*, which the CLI reads):

- ``DURABLE_LOG=FILE``: append one line per completed watched call, ``<name> <first arg>``.
- ``CRASH_AFTER=<names>[:<suffix>]``: SIGKILL this process right after the N-th completed
  call of one of ``<names>`` (comma-separated, ``*`` for any watched call) whose first
  argument, when it is a path, ends with ``<suffix>``. N is ``CRASH_NTH`` (default 1).
- ``FAIL_ONCE=<names>:<ERRNO>``: the ``FAIL_NTH``-th (default 1) call of one of ``<names>``
  raises ``OSError(errno.<ERRNO>)`` instead of running; later calls run normally.
- ``S3_CRASH_AFTER=<botocore operation>`` (e.g. ``UploadPart``, ``PutObject``,
  ``CompleteMultipartUpload``): SIGKILL this process right after the ``S3_CRASH_NTH``-th
  (default 1) call of that S3 operation that succeeded (returned a response, not an
  error), by wrapping ``botocore.client.BaseClient._make_api_call``. With
  ``DURABLE_LOG`` set, each successful call of that operation is logged as
  ``s3 <operation>``.
"""

from __future__ import annotations

import errno
import functools
import os
import runpy
import signal
import sys
from collections.abc import Callable
from typing import Any

WATCHED = (
    "rename",
    "replace",
    "link",
    "unlink",
    "remove",
    "rmdir",
    "fsync",
    "fdatasync",
    "pwrite",
    "pwritev",
)


def _selector(spec: str) -> tuple[set[str], str]:
    names, _, suffix = spec.partition(":")
    chosen = set(WATCHED) if names == "*" else set(names.split(","))
    unknown = chosen - set(WATCHED)
    if unknown:
        raise SystemExit(f"crashing_cli: unknown call(s) {sorted(unknown)}")
    return chosen, suffix


def _describe(arg: Any) -> tuple[str, str | None]:
    """How the first argument is logged, and its path text when it is a path."""
    if isinstance(arg, (str, bytes, os.PathLike)):
        text = os.fsdecode(os.fspath(arg))
        return text, text
    return repr(arg), None


def install() -> None:
    log_fd = None
    if os.environ.get("DURABLE_LOG"):
        log_fd = os.open(os.environ["DURABLE_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    crash_names: set[str] = set()
    crash_suffix = ""
    if os.environ.get("CRASH_AFTER"):
        crash_names, crash_suffix = _selector(os.environ["CRASH_AFTER"])
    crash_nth = int(os.environ.get("CRASH_NTH", "1"))
    fail_names: set[str] = set()
    fail_errno = 0
    if os.environ.get("FAIL_ONCE"):
        spec, _, code = os.environ["FAIL_ONCE"].rpartition(":")
        fail_names, _ = _selector(spec)
        fail_errno = getattr(errno, code)
    fail_nth = int(os.environ.get("FAIL_NTH", "1"))
    counts = {"crash": 0, "fail": 0}

    def note(line: str) -> None:
        if log_fd is not None:
            os.write(log_fd, f"{line}\n".encode(errors="backslashreplace"))

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(real)
        def watched(*args: Any, **kwargs: Any) -> Any:
            if name in fail_names:
                counts["fail"] += 1
                if counts["fail"] == fail_nth:
                    raise OSError(fail_errno, os.strerror(fail_errno))
            result = real(*args, **kwargs)
            shown, path = _describe(args[0] if args else None)
            note(f"{name} {shown}")
            if name in crash_names and (not crash_suffix or (path or "").endswith(crash_suffix)):
                counts["crash"] += 1
                if counts["crash"] == crash_nth:
                    note(f"KILLED after {name} {shown}")
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

        return watched

    for name in WATCHED:
        real = getattr(os, name, None)
        if real is not None:
            setattr(os, name, wrap(name, real))


def install_s3() -> None:
    """The ``S3_CRASH_AFTER`` hook (see the module docstring); no-op when it is unset."""
    operation = os.environ.get("S3_CRASH_AFTER", "")
    if not operation:
        return
    nth = int(os.environ.get("S3_CRASH_NTH", "1"))
    log_path = os.environ.get("DURABLE_LOG", "")
    from botocore.client import BaseClient

    real = getattr(BaseClient, "_make_api_call")  # noqa: B009 (private, not in the stubs)
    count = 0

    @functools.wraps(real)
    def watched(self: Any, operation_name: str, api_params: Any) -> Any:
        nonlocal count
        result = real(self, operation_name, api_params)
        if operation_name == operation:
            count += 1
            if log_path:
                with open(log_path, "a") as fp:
                    fp.write(f"s3 {operation_name}\n")
                    if count == nth:
                        fp.write(f"KILLED after s3 {operation_name}\n")
            if count == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(BaseClient, "_make_api_call", watched)  # noqa: B010


if __name__ == "__main__":
    install()
    install_s3()
    sys.argv = ["streamsend", *sys.argv[1:]]
    # Exactly what `python -m streamsend` runs, wherever main() lives.
    runpy.run_module("streamsend", run_name="__main__", alter_sys=True)
