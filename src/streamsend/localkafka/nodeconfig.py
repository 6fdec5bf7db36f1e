"""Pure rendering of what a node needs on disk and on its command line (no I/O here)."""

from __future__ import annotations

from pathlib import Path

from streamsend.localkafka import tls
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

_NODE_HEADER = "# Written by streamsend at every node start; edits here are overwritten.\n"

# The listeners of a secure cluster, besides PLAINTEXT and CONTROLLER.
SASL_SSL_LISTENER = "SASL_SSL"
MTLS_LISTENER = "MTLS"
_PROTOCOLS = {
    "PLAINTEXT": "PLAINTEXT",
    "CONTROLLER": "PLAINTEXT",
    SASL_SSL_LISTENER: "SASL_SSL",
    MTLS_LISTENER: "SSL",
}
SCRAM_MECHANISM = "SCRAM-SHA-512"
OAUTHBEARER_MECHANISM = "OAUTHBEARER"
SASL_MECHANISMS = ("PLAIN", SCRAM_MECHANISM, OAUTHBEARER_MECHANISM)
CLIENT_SASL_PLAIN_FILE = "client-sasl-ssl-plain.properties"
CLIENT_SASL_SCRAM_FILE = "client-sasl-ssl-scram.properties"
CLIENT_MTLS_FILE = "client-mtls.properties"


def node_dir(directory: Path, node: NodeSpec) -> Path:
    return directory / f"node-{node.node_id}"


def server_properties(
    directory: Path,
    layout: Layout,
    node: NodeSpec,
    credentials: tls.Credentials | None = None,
) -> dict[str, str]:
    """server.properties of one KRaft combined-mode (broker + controller) node.

    A secure layout needs the SASL ``credentials`` (the PLAIN users live in the JAAS line).
    """
    count = len(layout.nodes)
    # Internal topics cannot have more replicas than brokers; three is the usual maximum.
    replication = min(3, count)
    # For the internal topics: one replica may be down (a fault-injection test kills one)
    # and they stay writable. User topics keep Kafka's default min.insync.replicas=1.
    min_isr = max(1, replication - 1)
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in layout.nodes)
    home = node_dir(directory, node)
    listeners = {
        "PLAINTEXT": f"127.0.0.1:{node.port}",
        "CONTROLLER": f"127.0.0.1:{node.controller_port}",
    }
    if layout.secure:
        listeners[SASL_SSL_LISTENER] = f"127.0.0.1:{node.sasl_ssl_port}"
        listeners[MTLS_LISTENER] = f"127.0.0.1:{node.mtls_port}"
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        # A static voter set: every node knows the whole quorum from its config, so storage
        # is formatted without --standalone and no dynamic quorum bootstrap is involved.
        "controller.quorum.voters": voters,
        "listeners": ",".join(f"{name}://{address}" for name, address in listeners.items()),
        "advertised.listeners": ",".join(
            f"{name}://{address}" for name, address in listeners.items()
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            f"{name}:{_PROTOCOLS[name]}" for name in listeners
        ),
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
    if layout.secure:
        if credentials is None:
            raise ValueError("a secure layout needs the SASL credentials")
        props.update(_secure_properties(directory, credentials))
    props.update(layout.extra_properties)
    return props


def _secure_properties(directory: Path, credentials: tls.Credentials) -> dict[str, str]:
    """TLS for both secure listeners (PEM files, no keytool), SASL users, client auth.

    The controller and inter-broker listeners stay PLAINTEXT on loopback: only clients
    meet TLS and SASL, so a misconfigured client cannot take the cluster itself down.
    """
    pem = tls.material(directory)
    sasl = f"listener.name.{SASL_SSL_LISTENER.lower()}."
    mtls = f"listener.name.{MTLS_LISTENER.lower()}."
    # The server side of PLAIN checks `user_<name>="<password>"` entries; no
    # username/password of its own, since no broker logs in over this listener.
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{credentials.user}="{credentials.plain_password}";'
    )
    return {
        # PEM keystore: the private key (PKCS#8, unencrypted: no password set) and the
        # certificate chain in one file; the CA as trust store for client certificates.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pem.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pem.ca_cert),
        "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        sasl + "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        sasl + "plain.sasl.jaas.config": plain_jaas,
        # SCRAM users are stored in the cluster metadata (created at format time).
        sasl + "scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        # No callback handler configured: Kafka's default for OAUTHBEARER, the *unsecured*
        # validator, takes any unsigned (alg none) JWT with `sub` and `exp` claims, from
        # whatever OIDC endpoint the client asked. For trying OAUTHBEARER/OIDC clients only.
        sasl + "oauthbearer.sasl.jaas.config": (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
        ),
        mtls + "ssl.client.auth": "required",
    }


def scram_format_arguments(credentials: tls.Credentials) -> list[str]:
    """``StorageTool format`` arguments that create the SCRAM user with the metadata."""
    user = f"name={credentials.user},password={credentials.scram_password}"
    return ["--add-scram", f"{SCRAM_MECHANISM}=[{user}]"]


def client_properties_names(layout: Layout) -> tuple[str, ...]:
    return (
        (CLIENT_SASL_PLAIN_FILE, CLIENT_SASL_SCRAM_FILE, CLIENT_MTLS_FILE) if layout.secure else ()
    )


def client_properties(
    directory: Path, layout: Layout, credentials: tls.Credentials
) -> dict[str, dict[str, str]]:
    """The client property files of a secure cluster, by file name: everything a
    librdkafka client (and so ``streamsend --config``) needs for each secure listener."""
    pem = tls.material(directory)
    sasl_ssl = {
        "bootstrap.servers": layout.sasl_ssl_bootstrap_servers,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(pem.ca_cert),
    }
    return {
        CLIENT_SASL_PLAIN_FILE: {
            **sasl_ssl,
            "sasl.mechanism": "PLAIN",
            "sasl.username": credentials.user,
            "sasl.password": credentials.plain_password,
        },
        CLIENT_SASL_SCRAM_FILE: {
            **sasl_ssl,
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": credentials.user,
            "sasl.password": credentials.scram_password,
        },
        CLIENT_MTLS_FILE: {
            "bootstrap.servers": layout.mtls_bootstrap_servers,
            "security.protocol": "SSL",
            "ssl.ca.location": str(pem.ca_cert),
            "ssl.certificate.location": str(pem.client_cert),
            "ssl.key.location": str(pem.client_key),
        },
    }


def render_properties(props: dict[str, str], header: str = _NODE_HEADER) -> str:
    """Java properties text; values here never hold newlines, escape the few specials."""

    def escape(text: str, is_key: bool) -> str:
        out = text.replace("\\", "\\\\").replace("\n", "\\n")
        if is_key:
            out = out.replace("=", "\\=").replace(":", "\\:").replace(" ", "\\ ")
        return out

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
