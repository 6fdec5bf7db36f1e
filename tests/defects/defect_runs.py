"""Running the real CLI for the defect tests: bounded, with raw stderr, optionally
through ``crashing_cli.py`` to inject faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import Pipeline, Process

CRASHING_CLI = Path(__file__).with_name("crashing_cli.py")

# Runs the command given after its first two arguments with the soft open-file limit set to
# the first, killing it after the second (seconds), and prints its exit status and peak
# RSS as JSON. The peak comes from getrusage(RUSAGE_CHILDREN) in this fresh process, whose
# only child is the command: in pytest's own process that figure is the largest of every
# child it ever waited for, so an earlier, bigger one would hide the one measured.
LIMITED = """
import json, resource, subprocess, sys
soft, timeout, cmd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
try:
    rc = subprocess.run(cmd, preexec_fn=limit, timeout=timeout).returncode
except subprocess.TimeoutExpired:
    rc = None
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"returncode": rc, "maxrss_kib": peak}))
"""


class Run(subprocess.CompletedProcess[str]):
    """A finished run: ``stderr`` decoded for reading, ``raw_stderr`` exactly as written;
    ``maxrss_kib`` is the peak RSS when the run had an open-file limit (else 0)."""

    raw_stderr: bytes
    maxrss_kib: int = 0


class Cli(Pipeline):
    def __init__(self, bootstrap: str, topic: str, workdir: Path) -> None:
        super().__init__(bootstrap, topic, workdir)
        self.env: dict[str, str] = {}  # fault-injection variables for the next runs
        self.wrapped = False  # run through crashing_cli.py
        self.nofile: int | None = None  # soft RLIMIT_NOFILE of the next runs

    def _command(self, role: str, props: dict[str, str], extra: Sequence[str]) -> list[str]:
        cmd = super()._command(role, props, extra)
        if self.wrapped:
            assert cmd[1:3] == ["-m", "streamsend"], cmd
            cmd[1:3] = [str(CRASHING_CLI)]
        return cmd

    def run(
        self, role: str, props: dict[str, str], extra: Sequence[str] = (), timeout: float = 120
    ) -> Run:
        cmd = self._command(role, props, extra)
        launched, limit = cmd, timeout
        if self.nofile is not None:  # the launcher enforces the timeout; this is a backstop
            launched = [sys.executable, "-c", LIMITED, str(self.nofile), str(timeout), *cmd]
            limit = timeout + 30
        log = self._log_path(role)
        env = {**os.environ, **self.env}
        try:
            done = subprocess.run(launched, capture_output=True, timeout=limit, env=env)
        except subprocess.TimeoutExpired as exc:
            done = subprocess.CompletedProcess(launched, None, b"", exc.stderr or b"")
        returncode, peak = done.returncode, 0
        if self.nofile is not None and done.returncode == 0:
            stats = json.loads(done.stdout.splitlines()[-1])
            returncode, peak = stats["returncode"], stats["maxrss_kib"]
        log.write_bytes(done.stderr)
        if returncode is None:
            tail = done.stderr[-4000:].decode("utf-8", "backslashreplace")
            pytest.fail(
                f"`streamsend {role}` did not finish within {timeout} s (hung; killed)\n"
                f"--- stderr tail ---\n{tail}"
            )
        result = Run(cmd, returncode, "", done.stderr.decode("utf-8", "backslashreplace"))
        result.raw_stderr = done.stderr
        result.maxrss_kib = peak
        return result

    def start(self, role: str, props: dict[str, str], extra: Sequence[str] = ()) -> Process:
        log = self._log_path(role)
        fp = log.open("w")
        proc = subprocess.Popen(
            self._command(role, props, extra),
            stdout=fp,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.env},
        )
        self._started.append(Process(proc, log, fp))
        return self._started[-1]

    def download(  # type: ignore[override]
        self, output_dir: Path, idle_ms: int = 4000, timeout: float = 120, **props: str
    ) -> Run:
        base = {"output.dir": str(output_dir), "idle.exit.ms": str(idle_ms)}
        merged = {**base, **{k.replace("_", "."): v for k, v in props.items()}}
        return self.run("download", merged, timeout=timeout)

    def upload(  # type: ignore[override]
        self, input_dir: Path, name: str = "up1", timeout: float = 120, **props: str
    ) -> Run:
        base = {"input.dir": str(input_dir), "uploader.name": name, "file.minimum.age.ms": "0"}
        merged = {**base, **{k.replace("_", "."): v for k, v in props.items()}}
        return self.run("upload", merged, ["--once"], timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("streamsend: error:")]


def staged(output_dir: Path) -> list[str]:
    """Names in the documented staging directory (``<transfer>.part`` files)."""
    staging = output_dir / ".streamsend" / "staging"
    return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


def rejected(output_dir: Path) -> list[str]:
    folder = output_dir / ".streamsend" / "rejected"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def content(path: Path) -> bytes | None:
    """The bytes at ``path``, or None when nothing is there."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
