"""The pure parts of the local Kafka manager: ids, ports, rendered config (no JVM)."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path
from typing import Any

import javaproperties
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from streamsend import localkafka
from streamsend.errors import ConfigError, LocalKafkaError
from streamsend.localkafka import layout, nodeconfig, process, tls
from streamsend.localkafka.layout import Layout, NodeSpec

DIR = Path("/srv/kafka")


def make_layout(
    count: int, message_max_bytes: int = 8388608, extra: dict[str, str] | None = None
) -> Layout:
    nodes = tuple(NodeSpec(i, 19000 + i, 29000 + i) for i in range(1, count + 1))
    return Layout("AAAAAAAAAAAAAAAAAAAAAA", "4.1.1", nodes, message_max_bytes, 384, extra or {})


def parsed(props: dict[str, str]) -> dict[str, str]:
    """What Kafka would read: render, then parse with a Java-properties parser."""
    result: dict[str, str] = javaproperties.loads(nodeconfig.render_properties(props))
    return result


def test_cluster_id_is_16_random_bytes_url_safe_unpadded() -> None:
    ids = {layout.new_cluster_id() for _ in range(500)}
    assert len(ids) == 500
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_single_node_properties() -> None:
    lay = make_layout(1)
    props = parsed(nodeconfig.server_properties(DIR, lay, lay.nodes[0]))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29001"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19001,CONTROLLER://127.0.0.1:29001"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(DIR / "node-1" / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["message.max.bytes"] == "8388608"
    assert int(props["replica.fetch.max.bytes"]) >= 8388608
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert lay.bootstrap_servers == "127.0.0.1:19001"


def test_three_node_properties_share_one_static_quorum() -> None:
    lay = make_layout(3)
    all_props = [parsed(nodeconfig.server_properties(DIR, lay, node)) for node in lay.nodes]
    voters = "1@127.0.0.1:29001,2@127.0.0.1:29002,3@127.0.0.1:29003"
    assert {p["controller.quorum.voters"] for p in all_props} == {voters}
    assert [p["node.id"] for p in all_props] == ["1", "2", "3"]
    assert len({p["listeners"] for p in all_props}) == 3
    assert len({p["log.dirs"] for p in all_props}) == 3
    for props in all_props:
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["share.coordinator.state.topic.min.isr"] == "2"
    assert lay.bootstrap_servers == "127.0.0.1:19001,127.0.0.1:19002,127.0.0.1:19003"


def test_zero_message_limit_leaves_kafka_defaults() -> None:
    lay = make_layout(1, message_max_bytes=0)
    props = nodeconfig.server_properties(DIR, lay, lay.nodes[0])
    assert "message.max.bytes" not in props
    assert "replica.fetch.max.bytes" not in props


def test_huge_message_limit_raises_every_limit_behind_it() -> None:
    limit = 200 * 1024 * 1024
    lay = make_layout(1, message_max_bytes=limit)
    props = nodeconfig.server_properties(DIR, lay, lay.nodes[0])
    for key in (
        "message.max.bytes",
        "replica.fetch.max.bytes",
        "replica.fetch.response.max.bytes",
        "fetch.max.bytes",
        "socket.request.max.bytes",
    ):
        assert int(props[key]) >= limit, key


def test_extra_properties_override_and_survive_rendering() -> None:
    lay = make_layout(1, extra={"num.io.threads": "8", "weird key=x": "a:b\\c"})
    props = parsed(nodeconfig.server_properties(DIR, lay, lay.nodes[0]))
    assert props["num.io.threads"] == "8"
    assert props["weird key=x"] == "a:b\\c"


def test_java_command_uses_heap_log4j_and_classpath() -> None:
    lay = make_layout(1)
    cmd = nodeconfig.java_command(
        "/usr/bin/java", Path("/cache/libs"), DIR, lay.nodes[0], 256, ["kafka.Kafka", "x"]
    )
    assert cmd[0] == "/usr/bin/java"
    assert "-Xmx256m" in cmd
    assert f"-Dlog4j2.configurationFile={DIR / nodeconfig.LOG4J2_FILE}" in cmd
    assert f"-Dkafka.logs.dir={DIR / 'node-1' / 'logs'}" in cmd
    assert cmd[cmd.index("-cp") + 1] == "/cache/libs/*"
    assert cmd[-2:] == ["kafka.Kafka", "x"]


def test_log4j_config_writes_to_a_file_only() -> None:
    text = nodeconfig.render_log4j2()
    assert "${sys:kafka.logs.dir}/server.log" in text
    assert "Console" not in text


def test_plan_nodes_gives_distinct_ports_and_honours_an_explicit_one() -> None:
    free = layout.free_ports(1)[0]
    nodes = layout.plan_nodes(3, free)
    assert nodes[0].port == free
    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6
    assert [n.node_id for n in nodes] == [1, 2, 3]


def test_layout_round_trips_through_json(tmp_path: Path) -> None:
    lay = make_layout(3, extra={"log.retention.ms": "1000"})
    layout.save_layout(tmp_path, lay)
    assert layout.load_layout(tmp_path) == lay
    assert layout.load_layout(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "kwargs",
    [{"brokers": 0}, {"port": 70000}, {"message_max_bytes": -1}, {"heap_mb": 16}],
)
def test_invalid_options_are_config_errors(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        localkafka.up(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == [], "validation comes before touching the directory"


def test_log_tail_keeps_the_first_error_above_a_long_stack_trace(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("[t] INFO old run\n", encoding="utf-8")
    since = log.stat().st_size
    trace = "".join(f"\tat frame{i}\n" for i in range(50))
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"[t] INFO starting\n[t] ERROR boom (x)\njava.lang.Oops\n{trace}")
    lines = process.tail(log, 30, since)
    assert len(lines) == 31
    assert lines[0] == "[t] ERROR boom (x)"
    assert lines[-1] == "\tat frame49"
    assert "old run" not in "".join(process.tail(log, 100, since))


def secure_layout(count: int = 1) -> Layout:
    nodes = tuple(
        NodeSpec(i, 19000 + i, 29000 + i, sasl_ssl_port=39000 + i, mtls_port=49000 + i)
        for i in range(1, count + 1)
    )
    return Layout("AAAAAAAAAAAAAAAAAAAAAA", "4.1.1", nodes, 8388608, 384, {}, secure=True)


CREDS = tls.Credentials("streamsend", "plain-pw", "scram-pw")


def test_secure_node_adds_a_sasl_ssl_and_an_mtls_listener() -> None:
    lay = secure_layout()
    props = parsed(nodeconfig.server_properties(DIR, lay, lay.nodes[0], CREDS))
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19001,CONTROLLER://127.0.0.1:29001,"
        "SASL_SSL://127.0.0.1:39001,MTLS://127.0.0.1:49001"
    )
    assert props["advertised.listeners"] == props["listeners"]
    assert props["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["ssl.keystore.type"] == "PEM"
    assert "ssl.keystore.password" not in props  # an unencrypted PEM key takes none
    assert props["ssl.keystore.location"] == str(DIR / "tls" / "broker-keystore.pem")
    assert props["ssl.truststore.location"] == str(DIR / "tls" / "ca.pem")
    assert props["listener.name.mtls.ssl.client.auth"] == "required"
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == (
        "PLAIN,SCRAM-SHA-512,OAUTHBEARER"
    )
    oauthbearer = props["listener.name.sasl_ssl.oauthbearer.sasl.jaas.config"]
    assert oauthbearer.endswith("OAuthBearerLoginModule required;")
    jaas = props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert 'user_streamsend="plain-pw";' in jaas
    assert "scram-pw" not in "".join(props.values())  # SCRAM users live in the metadata
    assert nodeconfig.scram_format_arguments(CREDS) == [
        "--add-scram",
        "SCRAM-SHA-512=[name=streamsend,password=scram-pw]",
    ]


def test_plaintext_node_has_no_secure_listener() -> None:
    lay = make_layout(1)
    props = nodeconfig.server_properties(DIR, lay, lay.nodes[0])
    assert "SASL_SSL" not in props["listeners"]
    assert not any(key.startswith(("ssl.", "sasl.", "listener.name.")) for key in props)
    assert nodeconfig.client_properties_names(lay) == ()


def test_secure_layout_without_credentials_is_refused() -> None:
    lay = secure_layout()
    with pytest.raises(ValueError):
        nodeconfig.server_properties(DIR, lay, lay.nodes[0])


def test_client_property_files_name_every_listener_and_credential() -> None:
    lay = secure_layout(3)
    files = nodeconfig.client_properties(DIR, lay, CREDS)
    assert tuple(files) == nodeconfig.client_properties_names(lay)
    plain = files["client-sasl-ssl-plain.properties"]
    scram = files["client-sasl-ssl-scram.properties"]
    mtls = files["client-mtls.properties"]
    assert plain["bootstrap.servers"] == "127.0.0.1:39001,127.0.0.1:39002,127.0.0.1:39003"
    assert (plain["security.protocol"], plain["sasl.mechanism"]) == ("SASL_SSL", "PLAIN")
    assert (plain["sasl.username"], plain["sasl.password"]) == ("streamsend", "plain-pw")
    assert (scram["sasl.mechanism"], scram["sasl.password"]) == ("SCRAM-SHA-512", "scram-pw")
    assert scram["ssl.ca.location"] == str(DIR / "tls" / "ca.pem")
    assert mtls["bootstrap.servers"] == "127.0.0.1:49001,127.0.0.1:49002,127.0.0.1:49003"
    assert mtls["security.protocol"] == "SSL"
    assert mtls["ssl.certificate.location"] == str(DIR / "tls" / "client.pem")
    assert mtls["ssl.key.location"] == str(DIR / "tls" / "client-key.pem")
    assert not any(key.startswith("sasl.") for key in mtls)
    rendered = javaproperties.loads(nodeconfig.render_properties(plain, "# x\n"))
    assert rendered == plain


def test_plan_nodes_gives_secure_clusters_four_distinct_ports_per_node() -> None:
    nodes = layout.plan_nodes(2, 0, secure=True)
    ports = [p for n in nodes for p in (n.port, n.controller_port, n.sasl_ssl_port, n.mtls_port)]
    assert 0 not in ports
    assert len(set(ports)) == 8
    assert all(n.sasl_ssl_port == 0 for n in layout.plan_nodes(1, 0))


def test_secure_layout_round_trips_and_old_layouts_read_as_plaintext(tmp_path: Path) -> None:
    lay = secure_layout(2)
    layout.save_layout(tmp_path, lay)
    assert layout.load_layout(tmp_path) == lay
    raw = json.loads((tmp_path / layout.LAYOUT_FILE).read_text())
    del raw["secure"]
    for node in raw["nodes"]:
        del node["sasl_ssl_port"], node["mtls_port"]
    (tmp_path / layout.LAYOUT_FILE).write_text(json.dumps(raw))
    old = layout.load_layout(tmp_path)
    assert old is not None and not old.secure
    assert old.nodes[0].sasl_ssl_port == 0


def test_certificates_chain_to_the_ca_with_the_right_names(tmp_path: Path) -> None:
    made = tls.ensure(tmp_path)
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    keystore = made.broker_keystore.read_bytes()
    assert keystore.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Kafka reads it
    assert b"ENCRYPTED" not in keystore
    broker, chain_ca = x509.load_pem_x509_certificates(
        keystore.split(b"-----END PRIVATE KEY-----\n")[1]
    )
    assert chain_ca == ca
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    client = x509.load_pem_x509_certificates(made.client_cert.read_bytes())[0]
    for leaf in (broker, client):
        leaf.verify_directly_issued_by(ca)
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    key = serialization.load_pem_private_key(made.client_key.read_bytes(), password=None)
    assert key.public_key() == client.public_key()


def test_private_files_are_0600_and_a_second_call_reuses_everything(tmp_path: Path) -> None:
    made = tls.ensure(tmp_path)
    for private in (made.broker_keystore, made.client_key, made.credentials_file,
                    made.directory / tls.CA_KEY):  # fmt: skip
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE(made.directory.stat().st_mode) == 0o700
    before = {p.name: p.read_bytes() for p in made.directory.iterdir()}
    creds = made.credentials()
    assert creds.user == "streamsend"
    assert creds.plain_password != creds.scram_password
    assert len(creds.plain_password) >= 24
    again = tls.ensure(tmp_path)
    assert {p.name: p.read_bytes() for p in again.directory.iterdir()} == before


def test_unreadable_credentials_are_named_without_their_content(tmp_path: Path) -> None:
    made = tls.ensure(tmp_path)
    made.credentials_file.write_text('{"user": "u", "plain": "s3cr3t-value"')
    with pytest.raises(LocalKafkaError) as caught:
        made.credentials()
    assert str(made.credentials_file) in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_secure_up_on_a_plaintext_cluster_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    layout.save_layout(tmp_path, make_layout(1))
    with pytest.raises(ConfigError, match="created without --secure") as caught:
        localkafka.up(tmp_path, secure=True)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "tls").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", layout.LAYOUT_FILE]
