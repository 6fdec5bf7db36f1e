"""The persisted shape of a local cluster: cluster id, nodes, ports and broker options.

It is written once by the first `up` and reused by every later one, so a restarted node
comes back on the same ports with the same identity and finds its data where it left it.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from streamsend.errors import LocalKafkaError

LAYOUT_FILE = "cluster.json"
_FORMAT = 1
DEFAULT_PORT = 9092


@dataclass(frozen=True)
class NodeSpec:
    node_id: int
    port: int
    controller_port: int
    # The listeners of a `--secure` cluster (0 = none): SASL_SSL and SSL with client
    # certificates required.
    sasl_ssl_port: int = 0
    mtls_port: int = 0


@dataclass(frozen=True)
class Layout:
    cluster_id: str
    kafka_version: str
    nodes: tuple[NodeSpec, ...]
    message_max_bytes: int
    heap_mb: int
    extra_properties: dict[str, str] = field(default_factory=dict)
    secure: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{node.sasl_ssl_port}" for node in self.nodes)

    @property
    def mtls_bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{node.mtls_port}" for node in self.nodes)

    def with_options(
        self, message_max_bytes: int, heap_mb: int, extra_properties: dict[str, str]
    ) -> Layout:
        return replace(
            self,
            message_max_bytes=message_max_bytes,
            heap_mb=heap_mb,
            extra_properties=dict(extra_properties),
        )


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, as `kafka-storage random-uuid`.

    Kafka refuses ids starting with '-' (they read as an option on its command line).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port.

    SO_REUSEADDR mirrors what the JVM sets on its server sockets, so a port that only has
    TIME_WAIT connections left (a node just killed) counts as free, as it does for Kafka.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel considers free right now.

    All sockets stay bound until every port is chosen, so the kernel cannot hand out the
    same port twice.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def plan_nodes(brokers: int, port: int | None, secure: bool = False) -> tuple[NodeSpec, ...]:
    """Ports for a new cluster: client port PORT (9092 when free) then free ones.

    ``port=None`` prefers 9092 and falls back to any free port; ``port=0`` always takes a
    free port (what tests use so they never fight over 9092). ``secure`` adds a SASL_SSL
    and an mTLS port per node, always free ones.
    """
    first = port
    if port is None:
        first = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else 0
    elif port != 0 and not port_is_free(port):
        raise LocalKafkaError(f"port {port} on 127.0.0.1 is in use; choose another --port")
    per_node = 4 if secure else 2
    pool = iter([p for p in free_ports(per_node * brokers + 1) if p != first])
    client_ports = [first or next(pool)] + [next(pool) for _ in range(brokers - 1)]
    controller_ports = [next(pool) for _ in range(brokers)]
    sasl_ssl_ports = [next(pool) if secure else 0 for _ in range(brokers)]
    mtls_ports = [next(pool) if secure else 0 for _ in range(brokers)]
    return tuple(
        NodeSpec(
            node_id=i + 1,
            port=client_ports[i],
            controller_port=controller_ports[i],
            sasl_ssl_port=sasl_ssl_ports[i],
            mtls_port=mtls_ports[i],
        )
        for i in range(brokers)
    )


def load_layout(directory: Path) -> Layout | None:
    path = directory / LAYOUT_FILE
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LocalKafkaError(f"cannot read the cluster layout {path}: {exc}") from exc
    try:
        return Layout(
            cluster_id=str(raw["cluster_id"]),
            kafka_version=str(raw["kafka_version"]),
            nodes=tuple(
                NodeSpec(
                    int(n["node_id"]),
                    int(n["port"]),
                    int(n["controller_port"]),
                    int(n.get("sasl_ssl_port", 0)),
                    int(n.get("mtls_port", 0)),
                )
                for n in raw["nodes"]
            ),
            message_max_bytes=int(raw["message_max_bytes"]),
            heap_mb=int(raw["heap_mb"]),
            extra_properties={str(k): str(v) for k, v in raw["extra_properties"].items()},
            secure=bool(raw.get("secure", False)),  # absent in layouts written before it
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LocalKafkaError(
            f"the cluster layout {path} is damaged ({exc!r}); "
            f"run `streamsend kafka down` and delete {directory} to start afresh"
        ) from exc


def save_layout(directory: Path, layout: Layout) -> None:
    data = {"format": _FORMAT, **asdict(layout)}
    path = directory / LAYOUT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves a half-written layout
