"""Benchmark: throughput and peak memory of the uploader and downloader.

Streams one file of --size bytes (default 1 GiB) through Kafka with the real CLI, each
side as its own process, and reports wall time, MB/s and peak RSS (from the kernel's
rusage of each process, so nothing is sampled or missed).

    .venv/bin/python bench/transfer.py                       # 1 GiB on the local Kafka
    .venv/bin/python bench/transfer.py --size 256M --files 4
    KAFKA_BOOTSTRAP_SERVERS=host:9092 .venv/bin/python bench/transfer.py

The local cluster is started with ``streamsend kafka up`` semantics in --kafka-dir.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from streamsend import localkafka

UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def run_measured(cmd: list[str], log: Path) -> tuple[int, float, int]:
    """Run a command; returns (exit code, seconds, peak RSS in bytes) of that process."""
    with log.open("w") as fp:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=fp, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, took, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="bytes per file (K/M/G suffixes)")
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=0, help="binary.chunk.size.bytes (0 = auto)")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--kafka-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        bootstrap = localkafka.up(dir=args.kafka_dir).bootstrap_servers
    size = parse_size(args.size)
    work = Path(args.work or tempfile.mkdtemp(prefix="streamsend-bench-"))
    source, target = work / "in", work / "out"
    source.mkdir(parents=True, exist_ok=True)
    for i in range(args.files):
        path = source / f"file-{i}.bin"
        with path.open("wb") as fp:
            remaining = size
            while remaining:
                piece = os.urandom(min(remaining, 8 << 20))
                fp.write(piece)
                remaining -= len(piece)
        old = time.time() - 3600
        os.utime(path, (old, old))
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    common = ["--bootstrap.servers", bootstrap, "--topic", topic]
    cli = [sys.executable, "-m", "streamsend"]
    up_cmd = [*cli, "upload", "--once", *common, "--input.dir", str(source),
              "--uploader.name", "bench", "--binary.chunk.size.bytes", str(args.chunk),
              "--topic.partitions", str(args.partitions),
              "--processing.state.topic", f"{topic}-state"]  # fmt: skip
    down_cmd = [*cli, "download", *common, "--output.dir", str(target), "--idle.exit.ms", "5000"]

    up_rc, up_s, up_rss = run_measured(up_cmd, work / "upload.log")
    down_rc, down_s, down_rss = run_measured(down_cmd, work / "download.log")
    # The downloader's time includes joining the group and the idle wait at the end.
    down_s -= 5.0
    identical = all(
        filecmp.cmp(source / f"file-{i}.bin", target / "bench" / f"file-{i}.bin", shallow=False)
        for i in range(args.files)
    ) if up_rc == down_rc == 0 else False  # fmt: skip
    total = size * args.files
    result = {
        "bytes": total,
        "files": args.files,
        "upload_seconds": round(up_s, 2),
        "upload_MBps": round(total / up_s / 1e6, 1),
        "upload_peak_rss_MiB": round(up_rss / 2**20, 1),
        "download_seconds": round(down_s, 2),
        "download_MBps": round(total / down_s / 1e6, 1),
        "download_peak_rss_MiB": round(down_rss / 2**20, 1),
        "identical": identical,
        "exit_codes": [up_rc, down_rc],
        "work": str(work),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
