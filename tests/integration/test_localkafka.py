"""`streamsend kafka up|down|status|fetch` against real JVMs, through the real CLI.

Each test that starts a cluster owns it in a tmp dir and stops it in ``finally``; every
cluster here uses port 0 (any free port) and a 256 MiB heap to stay light.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness import create_topic
from streamsend import localkafka
from streamsend.errors import LocalKafkaError

HEAP = "256"
BOOTSTRAP_LINE = re.compile(r"^bootstrap\.servers=127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)*$")


def kafka_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamsend", "kafka", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def jvms_in(directory: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions directory (zombies have none)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(directory) in arg for arg in cmdline):
            found.append(proc)
    return found


def pids(directory: Path) -> list[int | None]:
    cluster = localkafka.status(directory)
    assert cluster is not None
    return [node.pid for node in cluster.nodes]


def up_ok(directory: Path, *extra: str) -> str:
    done = kafka_cli("up", "--dir", str(directory), "--port", "0", "--heap", HEAP, *extra)
    assert done.returncode == 0, done.stderr
    line = last_line(done.stdout)
    assert BOOTSTRAP_LINE.match(line), done.stdout
    return line


def produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=value)
    assert producer.flush(60) == 0


def consume_first(bootstrap: str, topic: str) -> bytes | None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                return msg.value()
        return None
    finally:
        consumer.close()


@pytest.mark.kafka
def test_up_is_idempotent_status_reports_and_down_stops_everything(tmp_path: Path) -> None:
    directory = tmp_path / "kafka"
    try:
        first = up_ok(directory)
        started = pids(directory)
        assert all(started)

        again = kafka_cli("up", "--dir", str(directory))
        assert again.returncode == 0, again.stderr
        assert last_line(again.stdout) == first
        assert "already running" in again.stderr
        assert pids(directory) == started, "a second `up` must not start anything"

        status = kafka_cli("status", "--dir", str(directory))
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"pid {started[0]}" in status.stdout
        assert first.split(":")[-1] in status.stdout

        mismatch = kafka_cli("up", "--dir", str(directory), "--brokers", "3")
        assert mismatch.returncode == 2
        assert "has 1 broker(s), not 3" in mismatch.stderr
        changed = kafka_cli("up", "--dir", str(directory), "--message-max-bytes", "0")
        assert changed.returncode == 2
        assert "running with other options" in changed.stderr
    finally:
        down = kafka_cli("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert jvms_in(directory) == []
    stopped = kafka_cli("status", "--dir", str(directory))
    assert stopped.returncode == 3
    assert "stopped" in stopped.stdout


@pytest.mark.kafka
@pytest.mark.slow
def test_killed_node_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    directory = tmp_path / "kafka"
    try:
        line = up_ok(directory)
        bootstrap = line.partition("=")[2]
        create_topic(bootstrap, "kept", 1, 1)
        produce(bootstrap, "kept", b"before the crash")
        cluster = localkafka.status(directory)
        assert cluster is not None
        old_pid = cluster.nodes[0].pid

        cluster.kill_node(1, signal.SIGKILL)
        down_status = kafka_cli("status", "--dir", str(directory))
        assert down_status.returncode == 3
        assert "stopped" in down_status.stdout

        again = kafka_cli("up", "--dir", str(directory))
        assert again.returncode == 0, again.stderr
        assert last_line(again.stdout) == line, "the node must come back on the same port"
        assert pids(directory)[0] not in (None, old_pid)
        assert consume_first(bootstrap, "kept") == b"before the crash"

        # A full stop and start through the Python API keeps the data as well.
        localkafka.down(directory)
        restarted = localkafka.up(directory)
        assert restarted.bootstrap_servers == bootstrap
        assert consume_first(bootstrap, "kept") == b"before the crash"
    finally:
        localkafka.down(directory)
    assert jvms_in(directory) == []


@pytest.mark.kafka
@pytest.mark.slow
def test_three_brokers_take_a_topic_with_replication_factor_3(tmp_path: Path) -> None:
    directory = tmp_path / "kafka"
    try:
        line = up_ok(directory, "--brokers", "3")
        bootstrap = line.partition("=")[2]
        assert len(bootstrap.split(",")) == 3
        create_topic(bootstrap, "replicated", 3, 3)
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
        partitions = metadata.topics["replicated"].partitions.values()
        assert [sorted(p.replicas) for p in partitions] == [[1, 2, 3]] * 3
        produce(bootstrap, "replicated", b"on three nodes")
    finally:
        down = kafka_cli("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert jvms_in(directory) == []


@pytest.mark.kafka
def test_broker_that_cannot_start_fails_up_with_its_log_tail(tmp_path: Path) -> None:
    directory = tmp_path / "kafka"
    # Passes the storage tool (it does not load the authorizer), kills the broker at start.
    broken = {"authorizer.class.name": "org.example.NoSuchAuthorizer"}
    try:
        with pytest.raises(LocalKafkaError) as failure:
            localkafka.up(directory, port=0, heap_mb=256, extra_properties=broken)
        message = str(failure.value)
        assert "exited during startup" in message
        assert f"Last lines of {directory / 'node-1' / 'logs' / 'server.log'}" in message
        assert "ClassNotFoundException: org.example.NoSuchAuthorizer" in message
        assert jvms_in(directory) == [], "a failed `up` must not leave a JVM behind"
    finally:
        localkafka.down(directory)


def test_missing_java_is_an_environment_problem(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH at all
    done = kafka_cli("fetch", env=env)
    assert done.returncode == 3
    assert "java was not found on PATH" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_maven_is_reported_when_the_jars_are_not_cached(tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("needs java on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    # An empty cache forces a resolve, and PATH holds java but no mvn.
    env = {**os.environ, "PATH": str(bin_dir), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = kafka_cli("fetch", env=env)
    assert done.returncode == 3
    assert "mvn (Maven) was not found on PATH" in done.stderr
