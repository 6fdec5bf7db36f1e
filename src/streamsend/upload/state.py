"""What the uploader has sent, kept in a compacted Kafka topic.

One record per file, keyed ``{topic}/{uploader}/{path}`` (the chunk topic is part of the
key: the same directory sent to another topic is sent again; ``path`` is the wire path),
so the state grows by one small record per tracked file and compaction keeps only the
latest: a million files is a million small records, never one document that outgrows the
message size limit. A file that is gone from input.dir gets a tombstone (a null value),
so compaction eventually forgets it and the topic does not grow without bound.

Every record of one uploader goes to one fixed partition of the state topic,
``crc32("{topic}/{uploader}") % partitions``, and a starting uploader reads only that
partition: it does not read every other uploader's state. The partition depends on the
state topic's partition count, so **adding partitions to an existing state topic makes
the uploaders whose partition moved start from an empty state and send every file
again** (the downloaders deliver identical bytes again; nothing is lost).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import asdict, dataclass
from typing import Protocol

from streamsend.errors import ConfigError, StreamsendError
from streamsend.transport.base import Admin, Producer, QueueFull, Transport

log = logging.getLogger(__name__)

STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}

# How long a failure to read the state partition is retried before the uploader gives up.
READ_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class SentRecord:
    """What is written per file: enough to audit what was sent, and when it changed."""

    size: int
    mtime_ns: int
    sha256: str
    transfer: str


# What is kept in memory per file: only what decides whether it changed, packed into
# one int (a tuple of two ints costs ~90 bytes more per file: ~90 MB a million files).
Version = int


def version_of(size: int, mtime_ns: int) -> Version:
    """(size, mtime_ns) as one int; mtime may be negative (before 1970)."""
    return (size << 64) | (mtime_ns & 0xFFFF_FFFF_FFFF_FFFF)


def state_partition(data_topic: str, uploader: str, partitions: int) -> int:
    """The one partition of the state topic that holds this uploader's records."""
    return zlib.crc32(f"{data_topic}/{uploader}".encode()) % partitions


def check_compacted(admin: Admin, topic: str) -> None:
    """An existing state topic that is not compacted would grow for ever and lose the
    state of unchanged files to retention (then every file is sent again)."""
    policy = admin.topic_config(topic, ["cleanup.policy"]).get("cleanup.policy", "")
    if "compact" not in policy.split(","):
        raise ConfigError(
            f"state topic {topic!r} has cleanup.policy={policy or 'unknown'!r}, it must be "
            f"compacted: set its cleanup.policy to compact (kafka-configs.sh --alter "
            f"--entity-type topics --entity-name {topic} --add-config cleanup.policy=compact) "
            f"or choose another processing.state.topic"
        )


class StateStore(Protocol):
    def load(self, new_topic: bool = False) -> dict[str, Version]: ...

    def save(self, path: str, record: SentRecord) -> None: ...

    def forget(self, path: str) -> None:
        """Write a tombstone: the file is gone."""


class MemoryStateStore:
    """For dry runs and unit tests: remembers for the life of the process only."""

    def __init__(self) -> None:
        self.records: dict[str, SentRecord] = {}

    def load(self, new_topic: bool = False) -> dict[str, Version]:
        return {path: version_of(r.size, r.mtime_ns) for path, r in self.records.items()}

    def save(self, path: str, record: SentRecord) -> None:
        self.records[path] = record

    def forget(self, path: str) -> None:
        self.records.pop(path, None)


class KafkaStateStore:
    """The state of one uploader of one chunk topic, in one partition of the state topic,
    through the transport (``send`` blocks on a full queue by polling the producer)."""

    def __init__(
        self,
        transport: Transport,
        producer: Producer,
        topic: str,
        data_topic: str,
        uploader: str,
        partition: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.prefix = f"{data_topic}/{uploader}/"
        self._transport = transport
        self._producer = producer

    def load(self, new_topic: bool = False) -> dict[str, Version]:
        """Read this uploader's partition from its beginning to its current end (nothing
        to read in a topic created just now). A failure to read is retried for a while:
        a partition has no leader for a moment after its topic was created, and during
        a leader election."""
        records: dict[str, Version] = {}
        count = 0
        deadline = time.monotonic() + READ_RETRY_SECONDS
        delay = 0.5
        while not new_topic:
            records, count = {}, 0
            try:
                for key, value in self._transport.read_partition(self.topic, self.partition):
                    count += 1
                    self._apply(key, value, records)
                break
            except StreamsendError:
                raise
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise
                if delay == 0.5:
                    log.warning(
                        "reading partition %d of state topic %s failed (%s); retrying",
                        self.partition,
                        self.topic,
                        exc,
                    )
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
        log.info(
            "state: %d file(s) already sent by this uploader (read %d record(s) of "
            "partition %d of %s)",
            len(records),
            count,
            self.partition,
            self.topic,
        )
        return records

    def _apply(self, key: bytes | None, value: bytes | None, into: dict[str, Version]) -> None:
        if not key:
            return
        text = key.decode("utf-8", errors="replace")
        if not text.startswith(self.prefix):
            return  # another uploader's, or another chunk topic's
        path = text[len(self.prefix) :]
        if value is None:
            into.pop(path, None)
            return
        try:
            doc = json.loads(value)
            into[path] = version_of(int(doc["size"]), int(doc["mtime_ns"]))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable state record for %r: %s", path, exc)

    def save(self, path: str, record: SentRecord) -> None:
        value = json.dumps(asdict(record), separators=(",", ":")).encode()
        self._send(path, value)

    def forget(self, path: str) -> None:
        self._send(path, None)

    def _send(self, path: str, value: bytes | None) -> None:
        # An unacknowledged state record only costs a resend after a restart.
        def on_ack(err: str | None) -> None:
            if err is not None:
                log.warning("state record for %r not acknowledged: %s", path, err)

        key = (self.prefix + path).encode()
        while True:
            try:
                self._producer.send(self.topic, key, [], value, on_ack, self.partition)
                return
            except QueueFull:
                self._producer.poll(0.1)
