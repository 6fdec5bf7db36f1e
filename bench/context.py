"""One run of the suite: sizes, the broker, what the CLI offers, and the measured steps
the sections are made of (an uploader, a downloader, a raw client, each its own process)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BenchFailure,
    Child,
    Exit,
    GiB,
    Kafka,
    MiB,
    SourceFile,
    settle,
    streamsend_cli,
    verify,
    wait_delivered,
)

IDLE_EXIT_MS = 3000
# The uploader's log line once it is connected, has its topics and has read its state
# (then it starts reading files), and the one that gives its chunk size.
CONNECTED = "already sent by this uploader"
UPLOAD_MARKS = (CONNECTED, "sending ", "chunk size of ")
UPLOADER = "bench"
CODECS = ("none", "zstd", "lz4", "gzip", "snappy")


@dataclass(frozen=True)
class Sizes:
    large: int
    small_files: int
    latency_files: int
    rss: tuple[int, ...]
    partitions: int
    group_files: int
    group_file_size: int
    funnel_files: int
    funnel_uploaders: int
    codec_large: int
    codec_small_files: int

    @classmethod
    def choose(cls, quick: bool, large: int | None) -> Sizes:
        if quick:
            big = large or 128 * MiB
            return cls(big, 1000, 30, (64 * MiB, 256 * MiB), min(big, GiB), 200, MiB, 2000, 200,
                       32 * MiB, 200)  # fmt: skip
        big = large or GiB
        return cls(big, 5000, 100, (256 * MiB, 2 * GiB), min(big, GiB), 400, MiB, 20_000, 1000,
                   256 * MiB, 1000)  # fmt: skip


@dataclass(frozen=True)
class Features:
    """Options of ``streamsend upload`` that other work adds; detected from --help."""

    partitioning: bool
    codecs: tuple[str, ...]  # values of --compression.type, empty when absent
    default_codec: str  # its default ("" when absent)

    @classmethod
    def detect(cls, cli: Sequence[str]) -> Features:
        text = subprocess.run(
            [*cli, "upload", "--help"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        codecs: tuple[str, ...] = ()
        default = ""
        found = re.search(r"\n  --compression\.type\b(.*?)(?=\n  --|\Z)", text, re.S)
        if found:
            help_text = " ".join(found.group(1).split())
            choices = re.search(r"One of:\s*([^.]*)\.", help_text)
            codecs = tuple(c.strip() for c in choices.group(1).split(",")) if choices else CODECS
            named = re.search(r"\(default: ([^)]*)\)", help_text)
            default = named.group(1) if named else "?"
        return cls("\n  --partitioning" in text, codecs, default)


@dataclass(frozen=True)
class Uploaded:
    exit: Exit
    connect_s: float | None  # start until connected, topics made and state read
    chunk_bytes: int | None  # from the uploader's log, when it says


@dataclass(frozen=True)
class Downloaded:
    delivered_s: float  # start until every file is at its final path
    assigned_s: float | None
    exit: Exit


class Bench:
    def __init__(self, kafka: Kafka, work: Path, sizes: Sizes, features: Features) -> None:
        self.kafka = kafka
        self.work = work
        self.sizes = sizes
        self.features = features
        self.cli = streamsend_cli()
        self.section_dir = work
        self.run_index = 0  # which run of a repeated section this is
        self.memo: dict[str, int] = {}  # what one run learned for the next (chunk size)

    def enter(self, section: str) -> Path:
        self.section_dir = self.work / section
        shutil.rmtree(self.section_dir, ignore_errors=True)
        self.section_dir.mkdir(parents=True)
        return self.section_dir

    def log(self, name: str) -> Path:
        return self.section_dir / "logs" / f"{name}.log"

    def common(self, topic: str) -> list[str]:
        return ["--bootstrap.servers", self.kafka.bootstrap, "--topic", topic]

    @staticmethod
    def timeout(nbytes: int, files: int = 1) -> float:
        """Generous: a run slower than 2 MB/s or 20 files/s is broken, not slow."""
        return 120 + nbytes / 2e6 + files / 20

    # -- the uploader ------------------------------------------------------------------

    def uploader(
        self,
        name: str,
        topic: str,
        input_dir: Path,
        *,
        once: bool,
        uploader: str = UPLOADER,
        extra: Sequence[str] = (),
    ) -> Child:
        self.kafka.track(topic, f"{topic}-state")
        cmd = [*self.cli, "upload", *(["--once"] if once else []), *self.common(topic),
               "--input.dir", str(input_dir), "--uploader.name", uploader,
               "--file.minimum.age.ms", "0", "--processing.state.topic", f"{topic}-state",
               *extra]  # fmt: skip
        return Child(name, cmd, self.log(name), marks=UPLOAD_MARKS)

    def upload_once(
        self,
        name: str,
        topic: str,
        input_dir: Path,
        nbytes: int,
        files: int = 1,
        uploader: str = UPLOADER,
        extra: Sequence[str] = (),
    ) -> Uploaded:
        settle()
        child = self.uploader(name, topic, input_dir, once=True, uploader=uploader, extra=extra)
        done = child.finish(self.timeout(nbytes, files))
        chunk = None
        if "chunk size of " in child.marks:
            found = re.search(r"chunk size of (\d+) bytes", child.log.read_text())
            chunk = int(found.group(1)) if found else None
        return Uploaded(done, child.mark(CONNECTED) or child.mark("sending "), chunk)

    # -- the downloader ----------------------------------------------------------------

    def downloader(
        self, name: str, topic: str, out: Path, idle_exit: bool, extra: Sequence[str] = ()
    ) -> Child:
        idle = ["--idle.exit.ms", str(IDLE_EXIT_MS)] if idle_exit else []
        cmd = [*self.cli, "download", *self.common(topic), "--output.dir", str(out), *idle,
               *extra]  # fmt: skip
        return Child(name, cmd, self.log(name), marks=("assigned ", "delivered "))

    def download_all(
        self,
        name: str,
        topic: str,
        out: Path,
        files: Sequence[SourceFile],
        uploader: str = UPLOADER,
        extra: Sequence[str] = (),
        idle_exit: bool = True,
    ) -> Downloaded:
        """A downloader on a filled topic: time until every file is delivered, then its
        exit (0) and every byte checked. With ``idle_exit`` it exits by itself after
        --idle.exit.ms (not counted), else it is stopped with SIGTERM (faster)."""
        settle()
        child = self.downloader(name, topic, out, idle_exit=idle_exit, extra=extra)
        nbytes = sum(f.size for f in files)
        at = wait_delivered(
            [[out / uploader / f.relative] for f in files],
            [child],
            self.timeout(nbytes, len(files)),
            interval=0.005 if len(files) < 100 else 0.02,
        )
        done = child.finish(IDLE_EXIT_MS / 1000 + 120) if idle_exit else child.stop()
        child.expect(done)
        verify(files, [out / uploader])
        return Downloaded(at - child.started, child.mark("assigned "), done)

    def warm_up(self, topic: str, downloader: Child, out: Path) -> None:
        """One file through ``upload --once`` under another uploader name, waited for at
        the running downloader: from then on the downloader is assigned and caught up."""
        source = self.section_dir / "warm-up"
        source.mkdir(exist_ok=True)
        (source / "hello.txt").write_text("warm-up\n")
        self.upload_once("warm-up-upload", topic, source, 8, uploader="warm-up")
        wait_delivered([[out / "warm-up" / "hello.txt"]], [downloader], 120)

    # -- the raw clients ----------------------------------------------------------------

    def _raw(self, name: str, args: list[str], timeout: float) -> RawRun:
        result = self.section_dir / f"{name}.json"
        cmd = [sys.executable, "-m", "bench.raw", *args, "--bootstrap", self.kafka.bootstrap,
               "--result", str(result)]  # fmt: skip
        settle()
        child = Child(name, cmd, self.log(name))
        done = child.finish(timeout)
        return RawRun(done, child.started, json.loads(result.read_text()))

    def raw_consume(self, name: str, topic: str, bounded: bool, nbytes: int) -> RawRun:
        args = ["consume", "--topic", topic, *(["--bounded"] if bounded else [])]
        return self._raw(name, args, self.timeout(nbytes))

    def raw_produce(self, name: str, topic: str, source: Path, chunk: int, limit: int) -> RawRun:
        args = ["produce", "--topic", topic, "--file", str(source), "--chunk", str(chunk),
                "--limit", str(limit)]  # fmt: skip
        return self._raw(name, args, self.timeout(source.stat().st_size))


@dataclass(frozen=True)
class RawRun:
    exit: Exit
    started: float  # monotonic, when the suite started the process
    result: dict[str, Any]  # what the process wrote; times are monotonic

    def at(self, key: str) -> float | None:
        """Seconds from the start of the process to the event ``key``."""
        value = self.result.get(key)
        return None if value is None else float(value) - self.started

    def between(self, first: str, last: str) -> float | None:
        a, b = self.result.get(first), self.result.get(last)
        return None if a is None or b is None else float(b) - float(a)


def mbps(nbytes: int, seconds: float | None) -> float | None:
    return round(nbytes / seconds / 1e6, 1) if seconds else None


def mib(nbytes: int) -> float:
    return round(nbytes / MiB, 1)


def secs(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def fail_unless(condition: bool, message: str) -> None:
    if not condition:
        raise BenchFailure(message)


def since(t0: float) -> float:
    return time.monotonic() - t0
