"""``streamsend kafka up|down|status|fetch``: argument parsing and output, nothing more."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamsend.localkafka import cluster, jars, nodeconfig

# `status` exit code when a node (or the whole cluster) is not running: 3 is what LSB init
# scripts return for "program is not running", so shell users can test it the usual way.
STATUS_NOT_RUNNING = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = subparsers.add_parser(
        "kafka",
        help="run a local Apache Kafka cluster (for trying Streamsend and for tests)",
        description=(
            f"Run Apache Kafka {jars.KAFKA_VERSION} (KRaft) on 127.0.0.1 from Maven Central "
            "jars, in the background, with its data and logs in one directory. Needs Java "
            "17+, and Maven the first time (to fetch the jars)."
        ),
    )
    sub = kafka.add_subparsers(dest="kafka_command", metavar="SUBCOMMAND")
    sub.required = True

    up = sub.add_parser(
        "up",
        help="start the cluster (or its stopped nodes); print bootstrap.servers",
        description=(
            "Start the cluster in --dir, creating it on first use, and return once a client "
            "can create a topic and produce to it. Nodes already running are left alone; "
            "stopped or crashed ones restart on their ports with their data. The last "
            "line on stdout is bootstrap.servers=HOST:PORT[,...]."
        ),
    )
    _add_dir(up)
    up.add_argument(
        "--brokers", type=int, metavar="N", help="number of nodes on first use (default 1)"
    )
    up.add_argument(
        "--port",
        type=int,
        help="client port of node 1 on first use (default 9092 if free; 0 = any free port)",
    )
    up.add_argument(
        "--message-max-bytes",
        type=int,
        metavar="BYTES",
        help=(
            f"broker message.max.bytes (default {nodeconfig.DEFAULT_MESSAGE_MAX_BYTES}; "
            f"0 = Kafka's stock {nodeconfig.STOCK_MESSAGE_MAX_BYTES})"
        ),
    )
    up.add_argument(
        "--heap",
        type=int,
        metavar="MB",
        help=f"JVM heap per node (default {nodeconfig.DEFAULT_HEAP_MB})",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help=(
            "on first use, add a SASL_SSL listener (PLAIN and SCRAM-SHA-512 users) and an "
            "SSL listener requiring client certificates, with a CA and certificates made in "
            "--dir, and write client-*.properties files there for --config"
        ),
    )
    up.set_defaults(handler=_up)

    down = sub.add_parser(
        "down",
        help="stop every node of the cluster",
        description=(
            "Stop every Kafka process of --dir (SIGTERM, SIGKILL after a grace period) and wait "
            "until they are gone. Data stays for the next `up`."
        ),
    )
    _add_dir(down)
    down.set_defaults(handler=_down)

    status = sub.add_parser(
        "status",
        help="show the nodes; exit 0 if all run, 3 otherwise",
        description=f"Show each node's id, pid (or stopped) and port. Exit status 0 when "
        f"every node runs, {STATUS_NOT_RUNNING} when one is stopped or no cluster exists.",
    )
    _add_dir(status)
    status.set_defaults(handler=_status)

    fetch = sub.add_parser(
        "fetch",
        help="resolve the Kafka jars into the cache; print its directory",
        description="Check Java and fetch the Kafka jars with Maven into the user cache "
        "(done once; later runs reuse it). Prints the directory holding the jars.",
    )
    fetch.set_defaults(handler=_fetch)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        help=f"cluster directory (default {cluster.default_dir()})",
    )


def _progress(message: str) -> None:
    print(f"streamsend: {message}", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    running = cluster.up(
        args.dir,
        brokers=args.brokers,
        port=args.port,
        message_max_bytes=args.message_max_bytes,
        heap_mb=args.heap,
        progress=_progress,
        secure=args.secure,
    )
    for path in running.client_files:
        print(path)
    print(f"bootstrap.servers={running.bootstrap_servers}", flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    cluster.down(args.dir, progress=_progress)
    return 0


def _status(args: argparse.Namespace) -> int:
    current = cluster.status(args.dir)
    if current is None:
        print(f"no Kafka cluster in {args.dir or cluster.default_dir()}")
        return STATUS_NOT_RUNNING
    print(f"cluster {current.cluster_id} in {current.dir}")
    for node in current.nodes:
        pid = f"pid {node.pid}" if node.running else "stopped"
        secure = (
            f", SASL_SSL 127.0.0.1:{node.sasl_ssl_port}, mTLS 127.0.0.1:{node.mtls_port}"
            if current.secure
            else ""
        )
        print(
            f"node {node.node_id}  {pid:<12} 127.0.0.1:{node.port}  "
            f"(controller 127.0.0.1:{node.controller_port}{secure})"
        )
    print(f"bootstrap.servers={current.bootstrap_servers}", flush=True)
    return 0 if current.running else STATUS_NOT_RUNNING


def _fetch(args: argparse.Namespace) -> int:
    jars.find_java()
    print(jars.libs_dir(_progress), flush=True)
    return 0
