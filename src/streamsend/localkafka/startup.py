"""Starting nodes: format storage once, spawn the JVMs, wait for a client round trip.

Every failure names the node and carries the tail of what it logged during this start, so
a broker that dies or hangs is diagnosed from the error message alone.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamsend.errors import LocalKafkaError
from streamsend.localkafka import nodeconfig, process, tls
from streamsend.localkafka.layout import Layout, NodeSpec, port_is_free
from streamsend.localkafka.readiness import READY_TOPIC, wait_until_ready

FORMAT_TIMEOUT_SECONDS = 120.0
LOG_TAIL_LINES = 30

Progress = Callable[[str], None]


@dataclass(frozen=True)
class _Started:
    node: NodeSpec
    pid: int
    log_offset: int  # where this run's output starts in server.log / stdout.log
    stdout_offset: int


def start_nodes(
    directory: Path,
    layout: Layout,
    missing: list[NodeSpec],
    java: str,
    libs: Path,
    say: Progress,
    timeout: float,
) -> None:
    (directory / nodeconfig.LOG4J2_FILE).write_text(nodeconfig.render_log4j2(), encoding="utf-8")
    for node in missing:
        for taken in (p for p in (node.port, node.controller_port) if not port_is_free(p)):
            raise LocalKafkaError(
                f"port {taken} of Kafka node {node.node_id} in {directory} is used by another "
                f"process; stop it, or `streamsend kafka down` and delete {directory}"
            )
    started: list[_Started] = []
    try:
        for node in missing:
            started.append(_start_node(directory, layout, node, java, libs, say))
        wait_ready(directory, layout, started, timeout, say)
    except BaseException:
        # Leave things as they were: no half-started JVM outlives a failed `up`.
        procs = [
            p
            for s in started
            if (p := process.node_process(s.pid, properties_path(directory, s.node))) is not None
        ]
        process.terminate(procs, 10.0)
        for s in started:
            process.clear_pid(nodeconfig.node_dir(directory, s.node))
        raise


def properties_path(directory: Path, node: NodeSpec) -> Path:
    return nodeconfig.node_dir(directory, node) / "server.properties"


def _start_node(
    directory: Path, layout: Layout, node: NodeSpec, java: str, libs: Path, say: Progress
) -> _Started:
    home = nodeconfig.node_dir(directory, node)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    props = properties_path(directory, node)
    credentials = tls.material(directory).credentials() if layout.secure else None
    text = nodeconfig.render_properties(
        nodeconfig.server_properties(directory, layout, node, credentials)
    )
    # 0600: a secure node's file holds the PLAIN users' passwords.
    tls.write_file(props, text.encode(), private=True)
    log, stdout = home / "logs" / "server.log", home / process.STDOUT_FILE
    log_offset, stdout_offset = process.file_size(log), process.file_size(stdout)
    if not (home / "data" / "meta.properties").exists():
        _format_storage(directory, layout, node, java, libs, say, credentials)
    say(f"starting Kafka node {node.node_id} on 127.0.0.1:{node.port}")
    cmd = nodeconfig.java_command(
        java, libs, directory, node, layout.heap_mb, [process.KAFKA_MAIN, str(props)]
    )
    pid = process.spawn_detached(cmd, stdout)
    process.write_pid(home, pid)
    return _Started(node, pid, log_offset, stdout_offset)


def _format_storage(
    directory: Path,
    layout: Layout,
    node: NodeSpec,
    java: str,
    libs: Path,
    say: Progress,
    credentials: tls.Credentials | None,
) -> None:
    say(f"formatting storage of Kafka node {node.node_id} (cluster id {layout.cluster_id})")
    props = str(properties_path(directory, node))
    main = [process.STORAGE_TOOL_MAIN, "format", "-t", layout.cluster_id, "-c", props]
    if credentials is not None:
        main += nodeconfig.scram_format_arguments(credentials)
    # The storage tool only reads the config and writes a few files: a small heap is plenty.
    cmd = nodeconfig.java_command(java, libs, directory, node, 256, main)
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=FORMAT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(
            f"formatting the storage of Kafka node {node.node_id} took over "
            f"{FORMAT_TIMEOUT_SECONDS:.0f} s"
        ) from exc
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if credentials is not None:  # the tool may echo its arguments
            output = output.replace(credentials.scram_password, "(hidden)")
        lines = [ln for ln in output.splitlines() if ln.strip()]
        log = nodeconfig.node_dir(directory, node) / "logs" / "server.log"
        raise LocalKafkaError(
            f"formatting the storage of Kafka node {node.node_id} failed "
            f"(exit {done.returncode}):\n"
            + _indent(lines[-LOG_TAIL_LINES:] or process.tail(log, LOG_TAIL_LINES))
        )


def wait_ready(
    directory: Path, layout: Layout, started: list[_Started], timeout: float, say: Progress
) -> None:
    def check_alive() -> None:
        for s in started:
            if process.node_process(s.pid, properties_path(directory, s.node)) is None:
                raise LocalKafkaError(
                    f"Kafka node {s.node.node_id} (127.0.0.1:{s.node.port}) in {directory} "
                    f"exited during startup.\n{_tails(directory, s)}"
                )

    say(f"waiting up to {timeout:.0f} s for Kafka at {layout.bootstrap_servers} to take a produce")
    begin = time.monotonic()
    try:
        wait_until_ready(
            layout.bootstrap_servers,
            [n.node_id for n in layout.nodes],
            [n.port for n in layout.nodes],
            timeout,
            check_alive,
        )
    except TimeoutError as exc:
        tails = "\n".join(_tails(directory, s) for s in started)
        raise LocalKafkaError(
            f"Kafka in {directory} was not ready within {timeout:.0f} s: waited for a client "
            f"at {layout.bootstrap_servers} to create topic {READY_TOPIC} and produce to it "
            f"on every node; last state: {exc}.\n{tails}"
        ) from exc
    say(f"Kafka ready after {time.monotonic() - begin:.1f} s")


def _tails(directory: Path, started: _Started) -> str:
    home = nodeconfig.node_dir(directory, started.node)
    log, stdout = home / "logs" / "server.log", home / process.STDOUT_FILE
    parts = []
    lines = process.tail(log, LOG_TAIL_LINES, started.log_offset)
    if lines:
        parts.append(f"Last lines of {log}:\n{_indent(lines)}")
    out = process.tail(stdout, LOG_TAIL_LINES, started.stdout_offset)
    if out or not lines:  # JVM errors (bad flags, OOM) only reach stdout
        parts.append(f"Last lines of {stdout}:\n{_indent(out or ['(empty)'])}")
    return "\n".join(parts)


def _indent(lines: list[str]) -> str:
    return "\n".join(f"  {line}" for line in lines)
