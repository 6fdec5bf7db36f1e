"""Node processes: start detached, recognise ours by pid and command line, stop, read logs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

# No stubs are required by pyproject; with types-psutil installed the ignore is unused.
import psutil  # type: ignore[import-untyped,unused-ignore]

PID_FILE = "kafka.pid"
STDOUT_FILE = "stdout.log"
KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"


def spawn_detached(argv: list[str], output: Path) -> int:
    """Start ``argv`` in its own session with stdout+stderr appended to ``output``.

    posix_spawn rather than subprocess.Popen: the node must outlive us, and a Popen object
    collected while its child still runs emits a ResourceWarning (an error under pytest's
    ``filterwarnings = error``). The new session keeps Ctrl-C in our terminal from reaching
    the broker.
    """
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    if fd <= 2:  # our stdio was closed; move out of the way of the dup2 targets
        fd, low = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3), fd
        os.close(low)
    try:
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
        ]
        # Popen's close_fds equivalent: a descriptor leaked into the long-lived JVM (say
        # the pipe a test reads our output from) would keep that pipe open for its lifetime.
        actions += [(os.POSIX_SPAWN_CLOSE, leaked) for leaked in _inheritable_fds() if leaked > 2]
        return os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=actions,
            setsid=True,
            # Python ignores SIGPIPE/SIGXFSZ and ignored signals survive exec: restore them.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setsigmask=(),
        )
    finally:
        os.close(fd)


def _inheritable_fds() -> list[int]:
    fds: list[int] = []
    with contextlib.suppress(OSError):
        for entry in Path("/dev/fd").iterdir():
            with contextlib.suppress(ValueError, OSError):
                if os.get_inheritable(int(entry.name)):
                    fds.append(int(entry.name))
    return fds


def read_pid(home: Path) -> int | None:
    try:
        return int((home / PID_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def write_pid(home: Path, pid: int) -> None:
    (home / PID_FILE).write_text(f"{pid}\n", encoding="ascii")


def clear_pid(home: Path) -> None:
    (home / PID_FILE).unlink(missing_ok=True)


def node_process(pid: int | None, properties: Path) -> psutil.Process | None:
    """The live broker process for ``properties``, or None.

    A pid alone is not proof: after a crash the kernel may give it to another process, so
    the command line must also show kafka.Kafka and this node's server.properties.
    """
    if pid is None:
        return None
    # An empty command line is a process between states: inside execve (posix_spawn returns
    # before the kernel has laid out the new argv) or exiting (its memory already freed).
    # Both settle within milliseconds; ask again rather than call a starting node dead.
    deadline = time.monotonic() + 2.0
    while True:
        try:
            proc = psutil.Process(pid)
            if _is_dead(proc):
                return None
            cmdline: list[str] = proc.cmdline()
        except psutil.Error:
            return None
        if cmdline or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return proc if KAFKA_MAIN in cmdline and str(properties) in cmdline else None


def strays(directory: Path) -> list[psutil.Process]:
    """Every JVM of ours (broker or storage tool) whose command line points into directory.

    ``down`` uses it as a safety net so no JVM survives even if a pid file was lost.
    """
    prefix = f"{directory}{os.sep}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline: list[str] = proc.info["cmdline"] or []
        if (KAFKA_MAIN in cmdline or STORAGE_TOOL_MAIN in cmdline) and any(
            arg.startswith(prefix) or f"={prefix}" in arg for arg in cmdline
        ):
            found.append(proc)
    return [proc for proc in found if not _is_dead(proc)]


def terminate(procs: list[psutil.Process], grace_seconds: float) -> list[psutil.Process]:
    """SIGTERM, wait up to ``grace_seconds``, SIGKILL the rest; return any survivors."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    alive = wait_gone(procs, grace_seconds)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return wait_gone(alive, 10.0)


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [proc for proc in alive if not _is_dead(proc)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return alive


def _is_dead(proc: psutil.Process) -> bool:
    """Gone, or a zombie (dead, only its exit status left); reap it if it is our child.

    Started through the Python API, nodes are children of the calling process (a test
    session), so their zombies are ours to collect.
    """
    try:
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(proc.pid, os.WNOHANG)
    return True


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, lines: int = 30, since: int = 0) -> list[str]:
    """Last ``lines`` lines written to ``path`` after byte offset ``since``.

    A file smaller than ``since`` was rolled over or truncated: read it all. When the first
    ERROR/FATAL line written since ``since`` scrolled out of the tail (a long stack trace
    follows it), it is put first: it is usually the one that explains the failure.
    """
    size = file_size(path)
    start = since if since <= size else 0
    start = max(start, size - 256 * 1024)  # enough for 30 lines, bounded for huge logs
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace")
    all_lines = [line for line in text.splitlines() if line.strip()]
    last = all_lines[-lines:]
    first_error = next((ln for ln in all_lines if " ERROR " in ln or " FATAL " in ln), None)
    if first_error is not None and first_error not in last:
        return [first_error, "  ...", *last[1:]]
    return last
