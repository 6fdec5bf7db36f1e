"""Helpers for end-to-end tests: run the real CLI as subprocesses against the real broker."""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def write_random(path: Path, size: int, seed: int = 0) -> Path:
    """Write ``size`` pseudo-random bytes (deterministic per seed) in 1 MiB pieces."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fp:
        remaining = size
        while remaining:
            n = min(remaining, 1 << 20)
            fp.write(rng.randbytes(n))
            remaining -= n
    return path


def age(path: Path, seconds: float = 3600) -> None:
    """Backdate a file so the uploader's minimum-age rule is satisfied."""
    t = time.time() - seconds
    os.utime(path, (t, t))


class Pipeline:
    """One topic, many uploaders and downloaders, each a real ``streamsend`` process."""

    def __init__(self, bootstrap: str, topic: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._started: list[Process] = []

    def _command(self, role: str, props: dict[str, str], extra: Sequence[str]) -> list[str]:
        cmd = [sys.executable, "-m", "streamsend", role]
        merged = {"bootstrap.servers": self.bootstrap, "topic": self.topic, **props}
        for key, value in merged.items():
            cmd += [f"--{key}", value]
        return cmd + list(extra)

    def _log_path(self, role: str) -> Path:
        self._count += 1
        return self.logs / f"{self._count:02d}-{role}.log"

    def run(
        self, role: str, props: dict[str, str], extra: Sequence[str] = (), timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        cmd = self._command(role, props, extra)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        self._log_path(role).write_text(result.stderr)
        return result

    def start(self, role: str, props: dict[str, str], extra: Sequence[str] = ()) -> Process:
        log = self._log_path(role)
        fp = log.open("w")
        proc = subprocess.Popen(
            self._command(role, props, extra), stdout=fp, stderr=subprocess.STDOUT, text=True
        )
        self._started.append(Process(proc, log, fp))
        return self._started[-1]

    def close(self) -> None:
        """Stop whatever a failed test left running, and close its log."""
        for process in self._started:
            if not process._fp.closed:
                process.stop(10)

    def upload(
        self, input_dir: Path, name: str = "up1", extra: Sequence[str] = (), **props: str
    ) -> subprocess.CompletedProcess[str]:
        base = {"input.dir": str(input_dir), "uploader.name": name, "file.minimum.age.ms": "0"}
        return self.run("upload", {**base, **_dotted(props)}, ["--once", *extra])

    def download(
        self, output_dir: Path, idle_ms: int = 4000, **props: str
    ) -> subprocess.CompletedProcess[str]:
        base = {"output.dir": str(output_dir), "idle.exit.ms": str(idle_ms)}
        return self.run("download", {**base, **_dotted(props)})


class Process:
    def __init__(self, proc: subprocess.Popen[str], log: Path, fp: IO[str]) -> None:
        self.proc = proc
        self.log = log
        self._fp = fp

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 300) -> int:
        rc = self.proc.wait(timeout)
        self._fp.close()
        return rc

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then SIGKILL if it is not gone within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait(10)


def _dotted(props: dict[str, str]) -> dict[str, str]:
    """Python keyword ``file_minimum_age_ms`` -> property ``file.minimum.age.ms``."""
    return {k.replace("_", "."): v for k, v in props.items()}


def count_records(bootstrap: str, topic: str) -> int:
    """Records currently on the topic (sum of high watermarks minus low)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "streamsend-test-count"})
    try:
        md = consumer.list_topics(topic, timeout=30)
        total = 0
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high - low
        return total
    finally:
        consumer.close()


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}"


# A log line on stderr (text format), as opposed to the one error line of a failure.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


def one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The exit code is ``status`` and stderr holds exactly one error line (log lines
    aside) and no traceback; returns the message."""
    assert result.returncode == status, explain(result)
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("streamsend: error: ")]
    assert len(errors) == 1, explain(result)
    others = [line for line in lines if line not in errors and not LOG_LINE.match(line)]
    assert others == [], explain(result)
    assert "Traceback" not in result.stderr
    return errors[0]


def wait_for_tree(source: Path, copy: Path, timeout: float = 120) -> list[str]:
    """Poll until ``copy`` matches ``source`` (content and metadata) or time runs out;
    returns the remaining differences."""
    from streamsend.verify import compare_trees

    deadline = time.monotonic() + timeout
    problems = compare_trees(source, copy) if copy.exists() else ["nothing delivered yet"]
    while problems and time.monotonic() < deadline:
        time.sleep(1)
        problems = compare_trees(source, copy) if copy.exists() else ["nothing delivered yet"]
    return problems


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``mount`` for the duration (a small or read-only filesystem);
    the test is skipped, with the reason, where this machine does not allow mounting."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def create_topic(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    replicas: int = 1,
    config: dict[str, str] | None = None,
) -> None:
    """Create a topic up front, so a downloader can join before the first record."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, partitions, replicas, config=config or {})
    admin.create_topics([new])[topic].result(timeout=60)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)
