"""Shared fixtures: one real Kafka broker for the whole session.

With ``KAFKA_BOOTSTRAP_SERVERS`` set, tests use that cluster. Otherwise the session starts
a single-node cluster in a temporary directory with ``streamsend.localkafka.up`` (the code
behind ``streamsend kafka up``, not a copy) and stops it at the end.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import Pipeline
from s3server import S3Server
from streamsend import localkafka

_KAFKA_FIXTURES = {"kafka_cluster", "bootstrap_servers", "secure_cluster"}


@dataclass(frozen=True)
class ExternalKafka:
    """A cluster we did not start (``KAFKA_BOOTSTRAP_SERVERS``); we never stop it."""

    bootstrap_servers: str


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that uses the broker fixtures is a kafka test, marked or not, so that
    # `-m "not kafka"` reliably runs without Java.
    for item in items:
        if _KAFKA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localkafka.Cluster | ExternalKafka]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield ExternalKafka(external)
        return
    directory = tmp_path_factory.mktemp("kafka")
    # port=0: never 9092, so a developer's own broker or a parallel session is no obstacle.
    # secure: the same JVM also serves the transport-security tests (SASL_SSL, mTLS).
    cluster = localkafka.up(dir=directory, port=0, secure=True)
    try:
        yield cluster
    finally:
        localkafka.down(directory)


@pytest.fixture(scope="session")
def secure_cluster(
    kafka_cluster: localkafka.Cluster | ExternalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[localkafka.Cluster]:
    """A cluster of ``kafka up --secure``: the session's own, or (when the session uses
    an external cluster) one started for these tests and stopped at the end."""
    if isinstance(kafka_cluster, localkafka.Cluster) and kafka_cluster.secure:
        yield kafka_cluster
        return
    directory = tmp_path_factory.mktemp("kafka-secure")
    cluster = localkafka.up(dir=directory, port=0, secure=True, heap_mb=256)
    try:
        yield cluster
    finally:
        localkafka.down(directory)


@pytest.fixture(scope="session")
def bootstrap_servers(kafka_cluster: localkafka.Cluster | ExternalKafka) -> str:
    return kafka_cluster.bootstrap_servers


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test (or earlier run on an external cluster) has used."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80]
    return f"test-{stem}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pipeline(bootstrap_servers: str, unique_topic: str, tmp_path: Path) -> Iterator[Pipeline]:
    """Uploaders and downloaders on one fresh topic of the session broker."""
    pipe = Pipeline(bootstrap_servers, unique_topic, tmp_path)
    yield pipe
    pipe.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3-compatible server (moto's, a real HTTP server) for the session, checking
    signatures and policies like Amazon S3."""
    server = S3Server(tmp_path_factory.mktemp("s3"), auth=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's S3 server."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_outage_server(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server of the test's own, with bucket ``outage``, that the test may stop
    and restart."""
    server = S3Server(tmp_path, auth=False, buckets=("outage",))
    server.start()
    yield server
    server.stop()
