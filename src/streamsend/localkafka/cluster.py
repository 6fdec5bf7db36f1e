"""up / down / status of a local Apache Kafka cluster living in one directory.

``DIR/cluster.json`` holds the layout; each node has ``DIR/node-N/`` with its
server.properties, pid file, stdout file, ``data/`` and ``logs/server.log``. Like
``docker compose up``, `up` starts whatever is not running and leaves the rest alone.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from streamsend.errors import ConfigError, EnvironmentProblem, LocalKafkaError
from streamsend.localkafka import jars, nodeconfig, process, tls
from streamsend.localkafka.layout import (
    LAYOUT_FILE,
    Layout,
    NodeSpec,
    load_layout,
    new_cluster_id,
    plan_nodes,
    save_layout,
)
from streamsend.localkafka.locking import dir_lock
from streamsend.localkafka.readiness import check_client_files
from streamsend.localkafka.startup import Progress, start_nodes, wait_ready

READY_TIMEOUT_SECONDS = 120.0
MAX_MESSAGE_MAX_BYTES = 1024 * 1024 * 1024
MIN_HEAP_MB = 128


@dataclass(frozen=True)
class NodeState:
    node_id: int
    port: int
    controller_port: int
    pid: int | None  # None when not running
    running: bool
    sasl_ssl_port: int = 0  # 0 unless the cluster is secure
    mtls_port: int = 0


@dataclass(frozen=True)
class Cluster:
    """A snapshot of a local cluster; call :meth:`refresh` for a newer one."""

    dir: Path
    cluster_id: str
    bootstrap_servers: str
    nodes: tuple[NodeState, ...]
    message_max_bytes: int
    heap_mb: int
    secure: bool = False
    # A secure cluster's client property files (SASL_SSL PLAIN, SASL_SSL SCRAM, mTLS).
    client_files: tuple[Path, ...] = ()

    def client_file(self, name: str) -> Path:
        """The client property file called ``name`` (see nodeconfig.CLIENT_*_FILE)."""
        for path in self.client_files:
            if path.name == name:
                return path
        raise LocalKafkaError(f"the cluster in {self.dir} has no {name} (not --secure?)")

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    def node(self, node_id: int) -> NodeState:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise LocalKafkaError(f"the cluster in {self.dir} has no node {node_id}")

    def refresh(self) -> Cluster:
        current = status(self.dir)
        if current is None:
            raise LocalKafkaError(f"the cluster layout in {self.dir} has disappeared")
        return current

    def kill_node(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a node (fault injection); SIGKILL/SIGTERM wait until it is gone."""
        spec = self.node(node_id)
        home = self.dir / f"node-{node_id}"
        proc = process.node_process(process.read_pid(home), home / "server.properties")
        if proc is None:
            raise LocalKafkaError(f"node {node_id} (port {spec.port}) is not running")
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            wait = 10.0 if sig == signal.SIGKILL else 60.0
            if process.wait_gone([proc], wait):
                raise LocalKafkaError(f"node {node_id} still runs {wait:.0f} s after {sig!r}")

    def start_missing(self, progress: Progress | None = None) -> Cluster:
        """Start the nodes that are not running (same ports, same data) and wait for them."""
        return up(self.dir, progress=progress)


def default_dir() -> Path:
    return Path(platformdirs.user_data_dir("streamsend")) / "kafka"


def status(dir: Path | None = None) -> Cluster | None:
    """What runs in ``dir``; None when no cluster was ever set up there."""
    directory = _absolute(dir)
    layout = load_layout(directory)
    return None if layout is None else _snapshot(directory, layout)


def up(
    dir: Path | None = None,
    brokers: int | None = None,
    port: int | None = None,
    message_max_bytes: int | None = None,
    heap_mb: int | None = None,
    extra_properties: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    timeout: float = READY_TIMEOUT_SECONDS,
    secure: bool = False,
) -> Cluster:
    """Start the cluster in ``dir`` (create it first if needed) and wait until it is usable.

    None means "as stored in dir" for an existing cluster, else the default: 1 broker,
    port 9092 when free (0 = any free port), 8 MiB messages (0 = Kafka's stock limits),
    384 MiB heap per node, no extra broker properties.

    ``secure`` creates the cluster with a SASL_SSL and an mTLS listener besides the
    plaintext one (certificates, users and client property files in ``dir``); an
    existing secure cluster stays secure without it, a plaintext one cannot become secure.
    """
    directory = _absolute(dir)
    _validate(brokers, port, message_max_bytes, heap_mb, extra_properties)
    say: Progress = progress or (lambda _message: None)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create the Kafka directory {directory}: {exc}") from exc
    with dir_lock(directory, what="starting or stopping Kafka", timeout=2 * timeout + 60):
        layout = load_layout(directory)
        java: str | None = None
        libs: Path | None = None
        if layout is None:
            # Tools first: a missing java/mvn must not leave a half-created cluster behind.
            java, libs = jars.find_java(), jars.libs_dir(say)
            layout = Layout(
                cluster_id=new_cluster_id(),
                kafka_version=jars.KAFKA_VERSION,
                nodes=plan_nodes(brokers or 1, port, secure),
                message_max_bytes=_default(message_max_bytes, nodeconfig.DEFAULT_MESSAGE_MAX_BYTES),
                heap_mb=_default(heap_mb, nodeconfig.DEFAULT_HEAP_MB),
                extra_properties=dict(extra_properties or {}),
                secure=secure,
            )
            if secure:  # before the layout: a layout on disk promises its certificates
                made = tls.ensure(directory)
                say(f"made a CA, certificates and SASL users in {made.directory}")
            save_layout(directory, layout)
        else:
            if secure and not layout.secure:
                raise ConfigError(
                    f"the cluster in {directory} was created without --secure; use another "
                    f"--dir, or `streamsend kafka down` and delete {directory}"
                )
            layout = _reconcile(
                directory, layout, brokers, port, message_max_bytes, heap_mb, extra_properties
            )
        files = _write_client_files(directory, layout)
        missing = [n for n in layout.nodes if not _snapshot_node(directory, n).running]
        if missing:
            java = java or jars.find_java()
            libs = libs or jars.libs_dir(say)
            start_nodes(directory, layout, missing, java, libs, say, timeout)
        else:
            say(f"Kafka already running in {directory}; checking that it answers")
            wait_ready(directory, layout, [], timeout, say)
        if files:
            say("checking that each client property file can log in")
            check_client_files(files, timeout)
        return _snapshot(directory, layout)


def _write_client_files(directory: Path, layout: Layout) -> tuple[Path, ...]:
    """(Re)write a secure cluster's client property files, 0600 (they hold passwords)."""
    if not layout.secure:
        return ()
    credentials = tls.material(directory).credentials()
    written = []
    header = (
        f"# Written by `streamsend kafka up --secure` for the cluster in {directory}.\n"
        "# Use it as: streamsend upload --config THIS_FILE --topic T --input.dir D\n"
    )
    for name, props in nodeconfig.client_properties(directory, layout, credentials).items():
        path = directory / name
        tls.write_file(path, nodeconfig.render_properties(props, header).encode(), private=True)
        written.append(path)
    return tuple(written)


def down(
    dir: Path | None = None,
    grace_seconds: float = 20.0,
    progress: Progress | None = None,
) -> None:
    """Stop every node (SIGTERM, then SIGKILL after ``grace_seconds``); wait until gone."""
    directory = _absolute(dir)
    say: Progress = progress or (lambda _message: None)
    if not (directory / LAYOUT_FILE).is_file():
        # Not (or no longer) a cluster directory: take no lock there, only make sure no
        # JVM of ours still points into it.
        _stop(directory, None, grace_seconds, say)
        return
    with dir_lock(directory, what="starting or stopping Kafka", timeout=grace_seconds + 300):
        _stop(directory, load_layout(directory), grace_seconds, say)


def _stop(directory: Path, layout: Layout | None, grace_seconds: float, say: Progress) -> None:
    nodes = layout.nodes if layout is not None else ()
    procs = {}
    for node in nodes:
        home = nodeconfig.node_dir(directory, node)
        proc = process.node_process(process.read_pid(home), home / "server.properties")
        if proc is not None:
            procs[proc.pid] = proc
    for proc in process.strays(directory):  # a lost pid file must not leave a JVM behind
        procs.setdefault(proc.pid, proc)
    if not procs:
        say(f"no Kafka process running in {directory}")
    else:
        say(f"stopping {len(procs)} Kafka process(es) in {directory}")
    survivors = process.terminate(list(procs.values()), grace_seconds)
    if survivors:
        pids = ", ".join(str(p.pid) for p in survivors)
        raise LocalKafkaError(f"Kafka process(es) {pids} in {directory} survived SIGKILL")
    for node in nodes:
        process.clear_pid(nodeconfig.node_dir(directory, node))


def _absolute(dir: Path | None) -> Path:
    return (dir if dir is not None else default_dir()).expanduser().resolve()


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _validate(
    brokers: int | None,
    port: int | None,
    message_max_bytes: int | None,
    heap_mb: int | None,
    extra_properties: Mapping[str, str] | None,
) -> None:
    if brokers is not None and brokers < 1:
        raise ConfigError(f"--brokers must be at least 1, not {brokers}")
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, not {port}")
    if message_max_bytes is not None and not 0 <= message_max_bytes <= MAX_MESSAGE_MAX_BYTES:
        raise ConfigError(
            f"--message-max-bytes must be 0 (Kafka's default) .. {MAX_MESSAGE_MAX_BYTES}, "
            f"not {message_max_bytes}"
        )
    if heap_mb is not None and heap_mb < MIN_HEAP_MB:
        raise ConfigError(f"--heap must be at least {MIN_HEAP_MB} (MiB), not {heap_mb}")
    for key, value in (extra_properties or {}).items():
        if not key.strip() or "\n" in key or "\n" in value:
            raise ConfigError(f"invalid extra broker property {key!r}={value!r}")


def _reconcile(
    directory: Path,
    layout: Layout,
    brokers: int | None,
    port: int | None,
    message_max_bytes: int | None,
    heap_mb: int | None,
    extra_properties: Mapping[str, str] | None,
) -> Layout:
    """Check a request against an existing cluster; apply changed options if it is stopped."""
    count = len(layout.nodes)
    if brokers is not None and brokers != count:
        raise ConfigError(
            f"the cluster in {directory} has {count} broker(s), not {brokers}; "
            f"use another --dir, or `streamsend kafka down` and delete {directory}"
        )
    if port not in (None, 0, layout.nodes[0].port):
        raise ConfigError(
            f"the cluster in {directory} listens on port {layout.nodes[0].port}, not {port}"
        )
    wanted = layout.with_options(
        _default(message_max_bytes, layout.message_max_bytes),
        _default(heap_mb, layout.heap_mb),
        dict(layout.extra_properties if extra_properties is None else extra_properties),
    )
    if wanted == layout:
        return layout
    if any(_snapshot_node(directory, node).running for node in layout.nodes):
        raise ConfigError(
            f"the cluster in {directory} is running with other options (message.max.bytes, "
            f"heap or extra properties); stop it with `streamsend kafka down` to change them"
        )
    save_layout(directory, wanted)
    return wanted


def _snapshot_node(directory: Path, node: NodeSpec) -> NodeState:
    home = nodeconfig.node_dir(directory, node)
    proc = process.node_process(process.read_pid(home), home / "server.properties")
    pid = None if proc is None else proc.pid
    return NodeState(
        node.node_id,
        node.port,
        node.controller_port,
        pid,
        proc is not None,
        node.sasl_ssl_port,
        node.mtls_port,
    )


def _snapshot(directory: Path, layout: Layout) -> Cluster:
    return Cluster(
        dir=directory,
        cluster_id=layout.cluster_id,
        bootstrap_servers=layout.bootstrap_servers,
        nodes=tuple(_snapshot_node(directory, node) for node in layout.nodes),
        message_max_bytes=layout.message_max_bytes,
        heap_mb=layout.heap_mb,
        secure=layout.secure,
        client_files=tuple(directory / name for name in nodeconfig.client_properties_names(layout)),
    )
