"""Chunk sizing and the uploader's file selection rules."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsend.errors import ConfigError
from streamsend.upload.selection import FileRules, refuse_system_dir
from streamsend.wire.chunking import (
    MIN_CHUNK_BYTES,
    RECORD_OVERHEAD_BYTES,
    automatic_chunk_size,
    chunk_count,
    fixed_chunk_size,
)

STOCK_LIMIT = 1048588  # Kafka's default message.max.bytes / max.message.bytes
EIGHT_MIB = 8 * 1024 * 1024

# -- chunk sizing --------------------------------------------------------------------


@pytest.mark.parametrize("limit", [STOCK_LIMIT, EIGHT_MIB])
def test_automatic_chunk_size_is_95_percent(limit: int) -> None:
    sizing = automatic_chunk_size(limit, limit, 95)
    assert sizing.chunk_bytes == limit * 95 // 100
    assert sizing.chunk_bytes + RECORD_OVERHEAD_BYTES <= limit
    assert sizing.message_limit == limit
    assert "95%" in sizing.reason


def test_stock_limit_values() -> None:
    assert automatic_chunk_size(STOCK_LIMIT, STOCK_LIMIT, 95).chunk_bytes == 996158
    assert automatic_chunk_size(EIGHT_MIB, EIGHT_MIB, 95).chunk_bytes == 7969177


@pytest.mark.parametrize(("broker", "topic"), [(EIGHT_MIB, STOCK_LIMIT), (STOCK_LIMIT, EIGHT_MIB)])
def test_automatic_chunk_size_uses_the_smaller_limit(broker: int, topic: int) -> None:
    sizing = automatic_chunk_size(broker, topic, 95)
    assert sizing.message_limit == STOCK_LIMIT
    assert sizing.chunk_bytes == STOCK_LIMIT * 95 // 100


def test_automatic_chunk_size_always_leaves_the_overhead() -> None:
    sizing = automatic_chunk_size(STOCK_LIMIT, STOCK_LIMIT, 99)
    assert sizing.chunk_bytes == STOCK_LIMIT - RECORD_OVERHEAD_BYTES


@settings(max_examples=200)
@given(st.integers(1, 1 << 31), st.integers(1, 1 << 31), st.integers(1, 99))
def test_property_automatic_chunk_fits_or_refuses(broker: int, topic: int, pct: int) -> None:
    try:
        sizing = automatic_chunk_size(broker, topic, pct)
    except ConfigError:
        assert min(broker, topic) * pct // 100 < MIN_CHUNK_BYTES or (
            min(broker, topic) - RECORD_OVERHEAD_BYTES < MIN_CHUNK_BYTES
        )
        return
    assert sizing.chunk_bytes >= MIN_CHUNK_BYTES
    assert sizing.chunk_bytes + RECORD_OVERHEAD_BYTES <= min(broker, topic)


def test_tiny_message_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no room"):
        automatic_chunk_size(RECORD_OVERHEAD_BYTES + 100, EIGHT_MIB, 95)


def test_fixed_chunk_size() -> None:
    largest = STOCK_LIMIT - RECORD_OVERHEAD_BYTES
    sizing = fixed_chunk_size(largest, STOCK_LIMIT, EIGHT_MIB)
    assert sizing.chunk_bytes == largest
    assert sizing.message_limit == STOCK_LIMIT


@pytest.mark.parametrize("chunk", [STOCK_LIMIT - RECORD_OVERHEAD_BYTES + 1, STOCK_LIMIT])
def test_fixed_chunk_size_too_large_is_a_config_error(chunk: int) -> None:
    with pytest.raises(ConfigError, match=r"binary\.chunk\.size\.bytes"):
        fixed_chunk_size(chunk, EIGHT_MIB, STOCK_LIMIT)


@pytest.mark.parametrize(
    ("size", "chunk", "count"),
    [
        (0, 100, 0),
        (1, 100, 1),
        (99, 100, 1),
        (100, 100, 1),
        (101, 100, 2),
        (200, 100, 2),
        (201, 100, 3),
        (1000, 1, 1000),
        (1 << 50, 996158, -(-(1 << 50) // 996158)),
    ],
)
def test_chunk_count(size: int, chunk: int, count: int) -> None:
    assert chunk_count(size, chunk) == count


@given(st.integers(0, 1 << 40), st.integers(1, 1 << 24))
def test_property_chunk_count_covers_size_exactly(size: int, chunk: int) -> None:
    n = chunk_count(size, chunk)
    assert n * chunk >= size
    assert (n - 1) * chunk < size or n == 0


# -- file rules ----------------------------------------------------------------------

SECOND = 1_000_000_000
NOW = 1_700_000_000 * SECOND


def rules(pattern: str = ".*", min_ms: int = 5000, max_ms: int = 0) -> FileRules:
    return FileRules.from_settings(pattern, min_ms, max_ms)


@pytest.mark.parametrize(
    ("relative", "wanted"),
    [
        ("a.txt", True),
        ("dir/sub/a.txt", True),
        ("données/été.bin", True),
        (".hidden", False),
        ("dir/.hidden", False),
        (".dir/a.txt", False),
        ("a/.b/c.txt", False),
        ("a.txt.PROCESSING", False),
        ("dir/a.txt.FINISHED", False),
        ("a.FINISHED.txt", True),
        ("a..txt", True),
        ("new\nline", True),  # refused later by the wire path rules, and reported
    ],
)
def test_wanted_name_default_pattern(relative: str, wanted: bool) -> None:
    assert rules().wanted_name(relative) is wanted


@pytest.mark.parametrize(
    ("relative", "wanted"),
    [
        ("a.csv", True),
        ("dir/a.csv", True),
        ("a.csv.bak", False),
        ("a.CSV", False),
        ("acsv", False),
        ("csv.d/readme.txt", False),
        ("a.csv.FINISHED", False),
    ],
)
def test_wanted_name_pattern_must_match_whole_name(relative: str, wanted: bool) -> None:
    assert rules(r".*\.csv").wanted_name(relative) is wanted


def test_pattern_applies_to_the_name_not_the_directory() -> None:
    r = rules("data")
    assert r.wanted_name("x/y/data")
    assert not r.wanted_name("data/file")
    assert not r.wanted_name("mydata")


def test_minimum_age() -> None:
    r = rules(min_ms=5000)
    assert r.old_enough(NOW - 5 * SECOND, NOW)
    assert r.old_enough(NOW - 60 * SECOND, NOW)
    assert not r.old_enough(NOW - 5 * SECOND + 1, NOW)
    assert not r.old_enough(NOW + SECOND, NOW)  # mtime in the future
    assert rules(min_ms=0).old_enough(NOW, NOW)


def test_maximum_age() -> None:
    r = rules(max_ms=10_000)
    assert not r.too_old(NOW - 10 * SECOND, NOW)
    assert r.too_old(NOW - 10 * SECOND - 1, NOW)
    assert not r.too_old(NOW, NOW)


def test_maximum_age_zero_means_no_limit() -> None:
    assert not rules(max_ms=0).too_old(0, NOW)


def test_from_settings_converts_ms_to_ns() -> None:
    r = rules(min_ms=3, max_ms=7)
    assert (r.minimum_age_ns, r.maximum_age_ns) == (3_000_000, 7_000_000)


# -- refused input directories --------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/usr", "/tmp", "/tmp/", "/home", "/etc", "/var"])
def test_refuse_system_dir(path: str) -> None:
    with pytest.raises(ConfigError, match="system directory"):
        refuse_system_dir(PurePosixPath(path))


@pytest.mark.parametrize("path", ["/tmp/x", "/usr/local/data", "/data", "/srv/in", "/home/u"])
def test_subdirectories_are_allowed(path: str) -> None:
    refuse_system_dir(PurePosixPath(path))
