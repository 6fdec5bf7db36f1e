"""The pure parts of the local Kafka manager: ids, ports, rendered config (no JVM)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import javaproperties
import pytest

from streamsend import localkafka
from streamsend.errors import ConfigError
from streamsend.localkafka import layout, nodeconfig, process
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
