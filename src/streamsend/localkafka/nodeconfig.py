"""Pure rendering of what a node needs on disk and on its command line (no I/O here)."""

from __future__ import annotations

from pathlib import Path

from streamsend.localkafka.layout import Layout, NodeSpec

LOG4J2_FILE = "log4j2.properties"
DEFAULT_MESSAGE_MAX_BYTES = 8 * 1024 * 1024
STOCK_MESSAGE_MAX_BYTES = 1_048_588  # Kafka's own default for message.max.bytes
DEFAULT_HEAP_MB = 384

# Kafka's defaults these limits must stay >= message.max.bytes, or chunk-sized messages
# are accepted from producers but can never be replicated or fetched.
_REPLICA_FETCH_RESPONSE_MAX = 10 * 1024 * 1024
_FETCH_MAX = 55 * 1024 * 1024
_SOCKET_REQUEST_MAX = 100 * 1024 * 1024


def node_dir(directory: Path, node: NodeSpec) -> Path:
    return directory / f"node-{node.node_id}"


def server_properties(directory: Path, layout: Layout, node: NodeSpec) -> dict[str, str]:
    """server.properties of one KRaft combined-mode (broker + controller) node."""
    count = len(layout.nodes)
    # Internal topics cannot have more replicas than brokers; three is the usual maximum.
    replication = min(3, count)
    # For the internal topics: one replica may be down (a fault-injection test kills one)
    # and they stay writable. User topics keep Kafka's default min.insync.replicas=1.
    min_isr = max(1, replication - 1)
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in layout.nodes)
    home = node_dir(directory, node)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        # A static voter set: every node knows the whole quorum from its config, so storage
        # is formatted without --standalone and no dynamic quorum bootstrap is involved.
        "controller.quorum.voters": voters,
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        ),
        "advertised.listeners": (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(home / "data"),
        # Small thread pools: the machines running this have 2 cores shared with clients.
        "num.network.threads": "2",
        "num.io.threads": "3",
        "background.threads": "4",
        "offsets.topic.replication.factor": str(replication),
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        # Topics created without an explicit replication factor get what a real cluster of
        # this size would give them, so tests on 3 nodes exercise replication by default.
        "default.replication.factor": str(replication),
        # 50 partitions each (the default) make the first group/transaction slow to set up
        # on a laptop-sized cluster and buy nothing here.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": "10",
        # Consumers join at once instead of waiting 3 s for more members: tests start faster.
        "group.initial.rebalance.delay.ms": "0",
        # A node restarted after a crash cannot register until the controller has fenced
        # its previous incarnation (DUPLICATE_BROKER_REGISTRATION until then), and leaders
        # move off a killed node only then: 6 s instead of 9 s speeds both, while heartbeats
        # every second keep a busy (GC-pausing) but live node from being fenced.
        "broker.session.timeout.ms": "6000",
        "broker.heartbeat.interval.ms": "1000",
        # 64 MiB segments (default 1 GiB) keep disk use proportionate on a dev machine.
        "log.segment.bytes": str(64 * 1024 * 1024),
        # auto.create.topics.enable stays at Kafka's default (true) so the local broker
        # behaves like a stock one; tests that need it off pass it in extra_properties.
    }
    if layout.message_max_bytes > 0:  # 0 = keep Kafka's stock limits
        limit = layout.message_max_bytes
        props["message.max.bytes"] = str(limit)
        props["replica.fetch.max.bytes"] = str(limit)
        props["replica.fetch.response.max.bytes"] = str(max(_REPLICA_FETCH_RESPONSE_MAX, limit))
        props["fetch.max.bytes"] = str(max(_FETCH_MAX, limit))
        props["socket.request.max.bytes"] = str(max(_SOCKET_REQUEST_MAX, limit + 1024 * 1024))
    props.update(layout.extra_properties)
    return props


def render_properties(props: dict[str, str]) -> str:
    """Java properties text; values here never hold newlines, escape the few specials."""

    def escape(text: str, is_key: bool) -> str:
        out = text.replace("\\", "\\\\").replace("\n", "\\n")
        if is_key:
            out = out.replace("=", "\\=").replace(":", "\\:").replace(" ", "\\ ")
        return out

    header = "# Written by streamsend at every node start; edits here are overwritten.\n"
    body = "".join(f"{escape(k, True)}={escape(v, False)}\n" for k, v in props.items())
    return header + body


def render_log4j2() -> str:
    """log4j2 config: everything to node-N/logs/server.log, nothing to the console.

    The log directory comes from the ``kafka.logs.dir`` system property (as in Kafka's own
    scripts), so one file serves every node.
    """
    return """# Written by streamsend.
status = warn
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 20MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
# One line per request at INFO would drown the useful lines.
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def java_command(
    java: str, libs: Path, directory: Path, node: NodeSpec, heap_mb: int, main: list[str]
) -> list[str]:
    """The JVM command line running ``main`` (a class and its arguments) for ``node``."""
    home = node_dir(directory, node)
    return [
        java,
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        # Die instead of limping on: the readiness check and `status` then see it.
        "-XX:+ExitOnOutOfMemoryError",
        f"-XX:ErrorFile={home / 'logs' / 'hs_err_pid%p.log'}",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={home / 'logs'}",
        f"-Dlog4j2.configurationFile={directory / LOG4J2_FILE}",
        "-cp",
        f"{libs}/*",
        *main,
    ]
