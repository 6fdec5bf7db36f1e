"""Transport security on the real broker of ``kafka up --secure``: a round trip of a few
files through every listener (plaintext, mTLS, SASL_SSL with PLAIN and SCRAM-SHA-512)
with nothing but the generated client property file, at DEBUG with librdkafka's
``debug=all``, and not one secret in the output; the ``kafka up --secure`` command itself.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import javaproperties
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from harness import write_random
from security_support import (
    MODES,
    VERBOSE,
    client_file,
    leaked,
    role_args,
    secrets_of,
    streamsend,
)
from streamsend import localkafka
from streamsend.localkafka import nodeconfig
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka


def make_files(source: Path) -> None:
    write_random(source / "small.bin", 1_000, seed=1)
    write_random(source / "nested" / "medium.bin", 300_000, seed=2)
    write_random(source / "nested" / "deeper" / "large.bin", 3 * 1024 * 1024 + 7, seed=3)


@pytest.mark.parametrize("mode", list(MODES))
def test_round_trip_through_each_listener_leaks_no_secret(
    secure_cluster: localkafka.Cluster, mode: str, unique_topic: str, tmp_path: Path
) -> None:
    config = client_file(secure_cluster, mode, tmp_path)
    source, out = tmp_path / "in", tmp_path / "out"
    make_files(source)
    up, _ = streamsend("upload", config, unique_topic, *role_args("upload", source), *VERBOSE)
    assert up.returncode == 0, up.stderr[-4000:]
    down, _ = streamsend("download", config, unique_topic, *role_args("download", out), *VERBOSE)
    assert down.returncode == 0, down.stderr[-4000:]
    assert compare_trees(source, out / "sec") == []
    output = up.stdout + up.stderr + down.stdout + down.stderr
    # The runs did go through librdkafka's debug output (so the search means something).
    assert "streamsend.librdkafka" in output and "CONF" in output
    assert leaked(output, secrets_of(secure_cluster)) == []


def test_each_listener_takes_only_its_own_security(secure_cluster: localkafka.Cluster) -> None:
    """The SASL_SSL listener really authenticates and the mTLS one really wants a
    certificate: the round trips above did not pass by a plaintext door."""
    node = secure_cluster.nodes[0]
    for port, protocol in ((node.sasl_ssl_port, "SASL_SSL"), (node.mtls_port, "SSL")):
        assert port not in (0, node.port)
        errors: list[str] = []
        admin = AdminClient(
            {
                "bootstrap.servers": f"127.0.0.1:{port}",
                "security.protocol": protocol,
                "ssl.ca.location": str(secure_cluster.dir / "tls" / "ca.pem"),
                "sasl.mechanism": "PLAIN",
                "sasl.username": "streamsend",
                "sasl.password": "not-the-password",
                "error_cb": lambda err, seen=errors: seen.append(err.str()),
            }
        )
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=5)
        admin.poll(0)
        assert errors, f"{protocol} on {port} let an unauthenticated client in"


def test_kafka_up_secure_again_reuses_everything_and_prints_the_files(
    secure_cluster: localkafka.Cluster,
) -> None:
    files = {path: path.read_bytes() for path in secure_cluster.client_files}
    tls_dir = secure_cluster.dir / "tls"
    keys = {path: path.read_bytes() for path in tls_dir.iterdir()}
    done = subprocess.run(
        [sys.executable, "-m", "streamsend", "kafka", "up", "--secure", "--dir",
         str(secure_cluster.dir)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"bootstrap.servers={secure_cluster.bootstrap_servers}"
    assert lines[:-1] == [str(path) for path in secure_cluster.client_files]
    assert [path.name for path in secure_cluster.client_files] == [
        nodeconfig.CLIENT_SASL_PLAIN_FILE,
        nodeconfig.CLIENT_SASL_SCRAM_FILE,
        nodeconfig.CLIENT_MTLS_FILE,
    ]
    assert {path: path.read_bytes() for path in secure_cluster.client_files} == files
    assert {path: path.read_bytes() for path in tls_dir.iterdir()} == keys
    for path in secure_cluster.client_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for node in secure_cluster.nodes:
        props = secure_cluster.dir / f"node-{node.node_id}" / "server.properties"
        assert stat.S_IMODE(props.stat().st_mode) == 0o600
    assert leaked(done.stdout + done.stderr, secrets_of(secure_cluster)) == []
    status = subprocess.run(
        [sys.executable, "-m", "streamsend", "kafka", "status", "--dir", str(secure_cluster.dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert f"SASL_SSL 127.0.0.1:{secure_cluster.nodes[0].sasl_ssl_port}" in status.stdout


@pytest.mark.slow
def test_a_secure_cluster_of_two_nodes(tmp_path: Path) -> None:
    """Every node gets both secure listeners and the SCRAM user (formatted on each)."""
    directory = tmp_path / "kafka"
    try:
        cluster = localkafka.up(directory, brokers=2, port=0, heap_mb=256, secure=True)
        # up already logged in with every client file; here each file reaches both nodes.
        for path in cluster.client_files:
            with path.open(encoding="utf-8") as fp:
                conf = dict(javaproperties.load(fp))
            conf["bootstrap.servers"] = conf["bootstrap.servers"].split(",")[1]
            metadata = AdminClient(conf).list_topics(timeout=30)
            assert sorted(metadata.brokers) == [1, 2], path.name
    finally:
        localkafka.down(directory)
