"""The raw client limit: a bare confluent-kafka producer and consumer, each run as its
own process by the suite (``python -m bench.raw produce|consume ...``).

The producer reads a file with ``pread`` one chunk at a time, like the uploader, and
produces every chunk under one key (so one file stays on one partition, as the uploader
does by default) with the uploader's settings: acks=all, idempotence, linger 5 ms,
batches and the client message limit set to the broker's limit, a bounded queue.

The consumer reads every message of a topic (to the high watermarks it finds at start)
and counts bytes (key + value + headers), writing nothing. With ``--bounded`` it uses the
downloader's prefetch bounds, otherwise librdkafka's defaults.

Each writes a JSON result (monotonic timestamps, comparable with the suite's) to --result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

STALL_SECONDS = 120.0

# The downloader's consumer settings that bound memory (download/service.py).
BOUNDED = {
    "queued.max.messages.kbytes": 32768,
    "fetch.queue.backoff.ms": 20,
    "fetch.max.bytes": 16 * 1024 * 1024,
    "fetch.wait.max.ms": 50,
}


def producer_config(bootstrap: str, limit: int) -> dict[str, Any]:
    """The uploader's producer settings (upload/service.py _producer_overrides)."""
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": 0,
        "message.max.bytes": limit,
        "batch.size": limit,
        "queue.buffering.max.kbytes": max(32 * 1024, 4 * limit // 1024),
        "linger.ms": 5,
    }


def produce(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(producer_config(args.bootstrap, args.limit))
    fd = os.open(args.file, os.O_RDONLY)
    size = os.fstat(fd).st_size
    key = f"raw/{uuid.uuid4().hex}".encode()
    first = time.monotonic()
    messages = 0
    try:
        for offset in range(0, size, args.chunk):
            data = os.pread(fd, args.chunk, offset)
            while True:
                try:
                    producer.produce(args.topic, data, key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            messages += 1
    finally:
        os.close(fd)
    left = producer.flush(600)
    flushed = time.monotonic()
    if left or failures:
        raise SystemExit(f"raw producer: {left} not flushed, failures: {failures[:3]}")
    return {
        "bytes": size,
        "messages": messages,
        "started": started,
        "first_produce": first,
        "flushed": flushed,
    }


def consume(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    conf: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap,
        "group.id": f"bench-raw-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if args.bounded:
        conf.update(BOUNDED)
    consumer = Consumer(conf)
    meta = consumer.list_topics(args.topic, timeout=30).topics[args.topic]
    target = 0
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=30)
        target += high - low
    assigned: list[float] = []

    def on_assign(_c: Consumer, _parts: list[TopicPartition]) -> None:
        assigned.append(time.monotonic())

    consumer.subscribe([args.topic], on_assign=on_assign)
    count = value_bytes = other_bytes = largest = 0
    first = last = 0.0
    progress = time.monotonic()
    try:
        while count < target:
            # poll(), not consume(n): consume waits for n records or its timeout, which
            # with chunk-sized records is a wait, not a batch.
            msg = consumer.poll(0.5)
            now = time.monotonic()
            if msg is None:
                if now - progress > STALL_SECONDS:
                    raise SystemExit(f"raw consumer: stalled at {count} of {target} messages")
                continue
            progress = now
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise SystemExit(f"raw consumer: {err.str()}")
            value = msg.value() or b""
            headers = msg.headers() or []
            pairs = headers.items() if isinstance(headers, dict) else headers
            count += 1
            value_bytes += len(value)
            largest = max(largest, len(value))
            other_bytes += len(msg.key() or b"") + sum(len(k) + len(v or b"") for k, v in pairs)
            first = first or now
            last = now
    finally:
        consumer.close()
    return {
        "messages": count,
        "value_bytes": value_bytes,
        "key_and_header_bytes": other_bytes,
        "largest_value": largest,
        "partitions": len(meta.partitions),
        "started": started,
        "assigned": assigned[0] if assigned else None,
        "first_message": first,
        "last_message": last,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--file", type=Path, help="produce: the file to send")
    parser.add_argument("--chunk", type=int, default=0, help="produce: bytes per message")
    parser.add_argument("--limit", type=int, default=0, help="produce: message size limit")
    parser.add_argument("--bounded", action="store_true", help="consume: downloader's bounds")
    args = parser.parse_args(argv)
    if args.mode == "produce" and not (args.file and args.chunk > 0 and args.limit > 0):
        parser.error("produce needs --file, --chunk and --limit")
    result = produce(args) if args.mode == "produce" else consume(args)
    args.result.write_text(json.dumps(result))
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
