"""A funnel of many simulated uploaders into one downloader: the producer side.

One process (``python -m bench.funnel ...``, started by the suite so that its memory
does not count against the downloader's peak) produces --files small files (1-16 KiB,
nested directories) under --uploaders uploader names to a topic, through the project's
own protocol code (``streamsend.wire.protocol.encode``). Transfers interleave: within
each window of --window files every file's chunks (4 KiB each) go out round-robin, then
their end records, so many transfers of many uploaders are open at once, as on a topic
fed by a fleet. The list of files (uploader/path, size, SHA-256) is written to --expected.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Producer

from streamsend.wire.protocol import Chunk, End, Message, encode, new_transfer_id

MTIME_NS = 1_700_000_000_000_000_000
CHUNK = 4096


def uploader_name(i: int, uploaders: int) -> str:
    return f"shop-{i % uploaders:04d}"


def file_path(rng: random.Random, i: int) -> str:
    depth = 2 + (i % 2)
    dirs = [f"d{rng.randrange(10)}", f"m{rng.randrange(12):02d}", f"x{rng.randrange(4)}"]
    return "/".join([*dirs[:depth], f"file-{i:06d}.bin"])


def transfer(uploader: str, path: str, data: bytes) -> tuple[list[Message], Message]:
    tid = new_transfer_id()
    chunks: list[Message] = [
        Chunk(
            transfer=tid,
            uploader=uploader,
            path=path,
            index=n,
            offset=offset,
            size=len(data),
            data=data[offset : offset + CHUNK],
        )
        for n, offset in enumerate(range(0, len(data), CHUNK))
    ]
    end = End(
        transfer=tid,
        uploader=uploader,
        path=path,
        size=len(data),
        chunks=len(chunks),
        sha256=hashlib.sha256(data).hexdigest(),
        mtime_ns=MTIME_NS,
        mode=0o644,
    )
    return chunks, end


def produce(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "queue.buffering.max.kbytes": 262144,
        }
    )

    def send(msg: Message) -> None:
        key, headers, value = encode(msg)
        while True:
            try:
                producer.produce(args.topic, value, key, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                producer.poll(0.1)

    expected: list[tuple[str, int, str]] = []
    started = time.monotonic()
    messages = 0
    for first in range(0, args.files, args.window):
        window = []
        for i in range(first, min(first + args.window, args.files)):
            uploader = uploader_name(i, args.uploaders)
            path = file_path(rng, i)
            data = rng.randbytes(rng.randint(1024, 16 * 1024))
            window.append(transfer(uploader, path, data))
            expected.append((f"{uploader}/{path}", len(data), hashlib.sha256(data).hexdigest()))
        longest = max(len(chunks) for chunks, _ in window)
        for n in range(longest):
            for chunks, _ in window:
                if n < len(chunks):
                    send(chunks[n])
                    messages += 1
        for _, end in window:
            send(end)
            messages += 1
        producer.poll(0)
    left = producer.flush(300)
    if left or failures:
        raise SystemExit(f"funnel producer: {left} not flushed, failures: {failures[:3]}")
    args.expected.write_text(json.dumps(expected))
    return {"files": len(expected), "messages": messages, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--uploaders", type=int, default=1_000)
    parser.add_argument("--window", type=int, default=200, help="transfers open at once")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--expected", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(produce(args)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
