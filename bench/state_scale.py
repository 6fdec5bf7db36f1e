"""Benchmark: the uploader's state topic with many tracked files.

Writes N state records (one per file, as the uploader does) for one uploader into its
partition of a fresh compacted state topic, then times a restarted uploader's load of
that state and measures the memory it takes. Shows that the state is many small records, never one
document that outgrows Kafka's message size limit.

    .venv/bin/python bench/state_scale.py                  # 1,000,000 files, local Kafka
    .venv/bin/python bench/state_scale.py --files 200000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import uuid

from streamsend import localkafka
from streamsend.config.loader import resolve
from streamsend.config.settings import UploaderSettings
from streamsend.transport.base import TopicSpec
from streamsend.transport.kafka_clients import KafkaTransport
from streamsend.upload.state import (
    STATE_TOPIC_CONFIG,
    KafkaStateStore,
    SentRecord,
    state_partition,
)

DATA_TOPIC, UPLOADER = "bench-data", "shop-0001"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or localkafka.up().bootstrap_servers
    topic = f"bench-state-{uuid.uuid4().hex[:8]}"
    settings = resolve(
        UploaderSettings,
        environ={},
        flags={"bootstrap.servers": bootstrap, "topic": DATA_TOPIC, "input.dir": "/srv/x"},
    )
    transport = KafkaTransport(settings, "bench")
    admin = transport.admin()
    partitions = settings.processing_state_topic_partitions
    admin.ensure_topic(topic, TopicSpec(partitions, 1, STATE_TOPIC_CONFIG))
    partition = state_partition(DATA_TOPIC, UPLOADER, partitions)
    producer = transport.producer({"linger.ms": 50})
    store = KafkaStateStore(transport, producer, topic, DATA_TOPIC, UPLOADER, partition)
    started = time.monotonic()
    for i in range(args.files):
        path = f"year=2026/month={i % 12:02d}/day={i % 28:02d}/receipt-{i:09d}.json"
        store.save(path, SentRecord(1000 + i, 1_790_000_000_000_000_000 + i, "ab" * 32, "cd" * 16))
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(300)
    wrote = time.monotonic() - started

    before = peak_rss_mib()
    started = time.monotonic()
    loaded = KafkaStateStore(transport, producer, topic, DATA_TOPIC, UPLOADER, partition).load()
    took = time.monotonic() - started
    result = {
        "files": args.files,
        "loaded": len(loaded),
        "write_seconds": round(wrote, 1),
        "load_seconds": round(took, 1),
        "load_files_per_second": round(len(loaded) / took),
        "peak_rss_before_load_MiB": round(before),
        "peak_rss_after_load_MiB": round(peak_rss_mib()),
    }
    print(json.dumps(result, indent=2))
    return 0 if len(loaded) == args.files else 1


if __name__ == "__main__":
    raise SystemExit(main())
