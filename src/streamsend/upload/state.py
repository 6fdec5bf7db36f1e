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
from typing import Any, Protocol

from streamsend.errors import ConfigError, StreamsendError
from streamsend.transport.base import Admin, Producer, QueueFull, Transport
from streamsend.wire.sealed import UploaderSecret

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
        secret: UploaderSecret | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.prefix = f"{data_topic}/{uploader}/"
        self._transport = transport
        self._producer = producer
        # Encrypting: a record is named by a keyed hash of its path and its value is
        # sealed (the path inside), so the state topic shows no path, size or time.
        self._secret = secret
        self._names: dict[str, str] = {}  # sealed record name -> path, from load()
        self._unreadable: list[bytes] = []  # keys of records this uploader cannot open

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
            self._names, self._unreadable = {}, []
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
        self._forget_unreadable()
        return records

    def _forget_unreadable(self) -> None:
        """Encrypting, records this uploader cannot open (written before encryption was
        turned on, with paths in the clear, or under another uploader key) get
        tombstones: compaction then removes them, and their files are sent again."""
        if self._unreadable:
            log.warning(
                "state: %d record(s) of this uploader are not sealed with its key (written "
                "before encryption was on, or with another key file); their files are sent "
                "again and the old records removed",
                len(self._unreadable),
            )
        for key in self._unreadable:
            self._send_key(key, None)
        self._unreadable = []

    def _apply(self, key: bytes | None, value: bytes | None, into: dict[str, Version]) -> None:
        if not key:
            return
        text = key.decode("utf-8", errors="replace")
        if not text.startswith(self.prefix):
            return  # another uploader's, or another chunk topic's
        path = text[len(self.prefix) :]
        doc: Any = None
        if self._secret is not None:
            if value is None:
                into.pop(self._names.pop(path, ""), None)
                return
            doc = self._opened(path, key, value)
            if doc is None:
                self._unreadable.append(key)
                return
            self._names[path] = path = doc["path"]
        elif value is None:
            into.pop(path, None)
            return
        try:
            doc = doc if doc is not None else json.loads(value)
            into[path] = version_of(int(doc["size"]), int(doc["mtime_ns"]))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable state record for %r: %s", path, exc)

    def _opened(self, name: str, key: bytes, value: bytes) -> dict[str, Any] | None:
        """A sealed record's fields, or None when this uploader's key does not open it."""
        assert self._secret is not None
        opened = self._secret.open(key, value)
        try:
            doc = json.loads(opened) if opened is not None else None
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("path"), str):
            return None
        return doc if self._secret.name(doc["path"]) == name else None

    def save(self, path: str, record: SentRecord) -> None:
        fields: dict[str, Any] = asdict(record)
        if self._secret is not None:
            fields["path"] = path
        self._send(path, json.dumps(fields, separators=(",", ":")).encode())

    def forget(self, path: str) -> None:
        self._send(path, None)

    def _send(self, path: str, value: bytes | None) -> None:
        if self._secret is None:
            self._send_key((self.prefix + path).encode(), value)
            return
        key = (self.prefix + self._secret.name(path)).encode()
        self._send_key(key, None if value is None else self._secret.seal(key, value))

    def _send_key(self, key: bytes, value: bytes | None) -> None:
        # An unacknowledged state record only costs a resend after a restart.
        def on_ack(err: str | None) -> None:
            if err is not None:
                log.warning("state record %r not acknowledged: %s", key, err)

        while True:
            try:
                self._producer.send(self.topic, key, [], value, on_ack, self.partition)
                return
            except QueueFull:
                self._producer.poll(0.1)
