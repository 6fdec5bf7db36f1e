"""Chunk sizing: how many bytes of a file go into one Kafka message."""

from __future__ import annotations

from dataclasses import dataclass

from streamsend.errors import ConfigError

# Key, Streamsend headers and the record batch framing take a few hundred bytes; a
# path can take up to 4 KiB twice (key and header). Leave room for the worst case.
RECORD_OVERHEAD_BYTES = 16 * 1024
MIN_CHUNK_BYTES = 1024


@dataclass(frozen=True)
class ChunkSizing:
    chunk_bytes: int
    message_limit: int  # the smallest limit on the path to the topic
    reason: str


def automatic_chunk_size(broker_limit: int, topic_limit: int, percentage: int) -> ChunkSizing:
    """``percentage`` of the smaller of the broker's and topic's maximum message size,
    never leaving less than the record overhead free."""
    limit = min(broker_limit, topic_limit)
    chunk = min(limit * percentage // 100, limit - RECORD_OVERHEAD_BYTES)
    if chunk < MIN_CHUNK_BYTES:
        raise ConfigError(f"the maximum message size {limit} leaves no room for file data")
    reason = (
        f"{percentage}% of min(broker message.max.bytes={broker_limit}, "
        f"topic max.message.bytes={topic_limit})"
    )
    return ChunkSizing(chunk, limit, reason)


def fixed_chunk_size(chunk_bytes: int, broker_limit: int, topic_limit: int) -> ChunkSizing:
    limit = min(broker_limit, topic_limit)
    if chunk_bytes + RECORD_OVERHEAD_BYTES > limit:
        raise ConfigError(
            f"binary.chunk.size.bytes={chunk_bytes} plus {RECORD_OVERHEAD_BYTES} bytes of record "
            f"overhead exceeds the maximum message size {limit} of the broker/topic"
        )
    return ChunkSizing(chunk_bytes, limit, "binary.chunk.size.bytes")


def chunk_count(size: int, chunk_bytes: int) -> int:
    return -(-size // chunk_bytes)
