"""Fixtures for the defect regression tests (tests/defects)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from defect_runs import Cli

# A module-scoped broker of its own, which a test module may stop (used by defect 9).
from faults.conftest import own_cluster  # noqa: F401
from harness import create_topic, wait_for


@pytest.fixture(scope="session")
def warm_broker(bootstrap_servers: str) -> str:
    """Join a consumer group once, so the broker has created its offsets topic before the
    first downloader's idle clock runs (on a fresh broker that takes seconds)."""
    topic = f"defects-warmup-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap_servers, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"{topic}-group"})
    try:
        consumer.subscribe([topic])
        wait_for(lambda: consumer.poll(0.2) is None and consumer.assignment(), 120, "a group")
    finally:
        consumer.close()
    return bootstrap_servers


@pytest.fixture
def cli(warm_broker: str, unique_topic: str, tmp_path: Path) -> Iterator[Cli]:
    pipe = Cli(warm_broker, unique_topic, tmp_path)
    yield pipe
    pipe.close()
