"""Benchmark: how fast one downloader delivers many small files from many uploaders.

Produces --files small files (1-16 KiB) under --uploaders uploader names to a fresh topic,
with the project's own protocol code, in one process (so the producer is not what is
measured), then runs the real `streamsend download` until it is idle and reports files/s,
the share of the run spent delivering, and the downloader's peak RSS. Every file is then
checked against what was produced.

    .venv/bin/python bench/funnel_download.py                   # 20,000 files, 1,000 uploaders
    .venv/bin/python bench/funnel_download.py --files 5000 --uploaders 100
    KAFKA_BOOTSTRAP_SERVERS=host:9092 .venv/bin/python bench/funnel_download.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from streamsend import localkafka
from streamsend.wire.protocol import Chunk, End, encode, new_transfer_id

MTIME = 1_700_000_000_000_000_000
IDLE_MS = 3000


def small_file(rng: random.Random, i: int) -> tuple[str, bytes]:
    path = f"d{i % 13}/sub{i % 7}/file-{i}.bin"
    return path, rng.randbytes(rng.randint(1024, 16 * 1024))


def produce(bootstrap: str, topic: str, files: int, uploaders: int) -> dict[str, str]:
    """All files, interleaved across uploader names; returns {uploader/path: sha256}."""
    rng = random.Random(7)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.kbytes": 262144}
    )
    expected: dict[str, str] = {}
    for i in range(files):
        uploader = f"shop-{i % uploaders:04d}"
        path, data = small_file(rng, i)
        sha = hashlib.sha256(data).hexdigest()
        tid = new_transfer_id()
        for message in (
            Chunk(tid, uploader, path, 0, 0, len(data), data),
            End(tid, uploader, path, len(data), 1, sha, MTIME, 0o644),
        ):
            key, headers, value = encode(message)
            while True:
                try:
                    producer.produce(topic, value, key, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.1)
        expected[f"{uploader}/{path}"] = sha
    assert producer.flush(120) == 0
    return expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--uploaders", type=int, default=1_000)
    parser.add_argument("--kafka-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--produce-only", metavar="TOPIC", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce_only:
        found = produce(args.bootstrap, args.produce_only, args.files, args.uploaders)
        args.expected.write_text(json.dumps(found))
        return 0

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or (
        localkafka.up(dir=args.kafka_dir).bootstrap_servers
    )
    topic = f"bench-funnel-{uuid.uuid4().hex[:8]}"
    expected_file = Path(tempfile.mkdtemp(prefix="streamsend-funnel-")) / "expected.json"
    # Produced by a child process: the kernel's peak RSS of a process started by fork
    # includes its parent's pages, so this process stays small when it starts the
    # downloader (whose peak is what is measured).
    subprocess.run(
        [sys.executable, __file__, "--produce-only", topic, "--expected", str(expected_file),
         "--files", str(args.files), "--uploaders", str(args.uploaders),
         "--bootstrap", bootstrap],
        check=True,
    )  # fmt: skip
    expected: dict[str, str] = json.loads(expected_file.read_text())
    out = Path(tempfile.mkdtemp(prefix="streamsend-funnel-")) / "out"
    cmd = [sys.executable, "-m", "streamsend", "download", "--bootstrap.servers", bootstrap,
           "--topic", topic, "--output.dir", str(out), "--idle.exit.ms", str(IDLE_MS)]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = last = None
    for line in proc.stderr:
        if " delivered " in line:
            now = time.monotonic()
            first = first or now
            last = now
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    delivered = 0
    for name, sha in expected.items():
        path = out / name
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha:
            delivered += 1
    span = (last - first) if first and last else 0.0
    result = {
        "files": args.files,
        "uploaders": args.uploaders,
        "delivered_verified": delivered,
        "exit": code,
        "delivery_span_s": round(span, 2),
        "files_per_s_while_delivering": round(delivered / span, 1) if span else None,
        "wall_s_including_startup_and_idle_exit": round(took, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if delivered == args.files and code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
