"""Prometheus metrics and health probes (``metrics.port``), documented in docs/operations.md.

One small HTTP server on a daemon thread serves ``/metrics`` (the Prometheus text format,
from ``prometheus-client``), ``/healthz`` and ``/readyz``. It never touches a service's
state itself: at each scrape it asks the service for a :class:`Snapshot` (plain numbers
read under the GIL), so the hot paths pay nothing for metrics they are not asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamsend.errors import EnvironmentProblem

log = logging.getLogger(__name__)

# A loop that has not turned for this long is reported unhealthy (/healthz 503): the
# longest a turn legitimately takes is bounded by the poll timeouts (about a second) and
# one record's disk write.
STALL_SECONDS = 120.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Snapshot:
    """What one side reports at a scrape. Counters only grow; gauges are current."""

    role: str  # "uploader" or "downloader"
    files: Mapping[str, int] = field(default_factory=dict)  # outcome -> files (counter)
    bytes: int = 0  # bytes sent / delivered (counter)
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> records (counter)
    retries: int = 0  # counter
    in_flight: int = 0  # uploader: transfers produced and not acknowledged
    staging_transfers: int = 0  # downloader: transfers in staging
    staging_bytes: int = 0
    paused_for_disk: bool = False
    paused_for_destination: bool = False  # downloader: its destination (S3) unavailable
    lag: Mapping[int, int] = field(default_factory=dict)  # partition -> records behind
    last_success: float | None = None  # wall-clock time of the last file sent / delivered
    connected: bool = False
    assigned: bool = True  # downloader: has partitions (an uploader always "has")


class _Collector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        verb = "sent" if s.role == "uploader" else "delivered"
        p = f"streamsend_{s.role}"
        files = CounterMetricFamily(
            f"{p}_files", f"Files by outcome ({verb}, failed, ...)", labels=["outcome"]
        )
        for outcome, count in sorted(s.files.items()):
            files.add_metric([outcome], count)
        yield files
        yield CounterMetricFamily(f"{p}_bytes", f"Bytes of files {verb}", value=s.bytes)
        if s.role == "downloader":
            skipped = CounterMetricFamily(
                f"{p}_records_skipped", "Records skipped, by reason", labels=["reason"]
            )
            for reason, count in sorted(s.skipped.items()):
                skipped.add_metric([reason], count)
            yield skipped
            yield GaugeMetricFamily(
                f"{p}_staging_transfers", "Transfers in staging", value=s.staging_transfers
            )
            yield GaugeMetricFamily(
                f"{p}_staging_bytes", "Bytes held by unfinished transfers", value=s.staging_bytes
            )
            yield GaugeMetricFamily(
                f"{p}_paused_for_disk",
                "1 while consumption is paused for a full output disk",
                value=int(s.paused_for_disk),
            )
            yield GaugeMetricFamily(
                f"{p}_paused_for_destination",
                "1 while consumption is paused because the destination (S3) is unavailable",
                value=int(s.paused_for_destination),
            )
            lag = GaugeMetricFamily(
                f"{p}_consumer_lag", "Records behind the end, per partition", labels=["partition"]
            )
            for partition, behind in sorted(s.lag.items()):
                lag.add_metric([str(partition)], behind)
            yield lag
        else:
            yield GaugeMetricFamily(
                f"{p}_transfers_in_flight", "Transfers not fully acknowledged", value=s.in_flight
            )
        yield CounterMetricFamily(f"{p}_retries", "Retries of files or requests", value=s.retries)
        if s.last_success is not None:
            yield GaugeMetricFamily(
                f"{p}_last_success_timestamp_seconds",
                f"Unix time of the last file {verb}",
                value=s.last_success,
            )
        yield GaugeMetricFamily(
            f"{p}_kafka_connected", "1 while Kafka is reachable", value=int(s.connected)
        )


class Heartbeat:
    """The service's loop calls ``beat()`` each turn; /healthz reads ``alive()``."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last < STALL_SECONDS


class MetricsServer:
    """/metrics, /healthz and /readyz on ``port`` (all interfaces: probes come from the
    kubelet and scrapes from Prometheus, on the pod's address)."""

    def __init__(
        self,
        port: int,
        snapshot: Callable[[], Snapshot],
        heartbeat: Heartbeat,
        host: str = "0.0.0.0",  # noqa: S104 (probes and scrapes come from outside the pod)
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(snapshot))

        def ready() -> bool:
            s = snapshot()
            return heartbeat.alive() and s.connected and s.assigned

        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE, generate_latest(registry)),
            "/healthz": lambda: _probe(heartbeat.alive()),
            "/readyz": lambda: _probe(ready()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                status, kind, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise EnvironmentProblem(
                f"metrics.port {port}: cannot listen ({exc.strerror}); choose another port"
            ) from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on port %d: /metrics, /healthz, /readyz", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(
    port: int, snapshot: Callable[[], Snapshot], heartbeat: Heartbeat
) -> MetricsServer | None:
    """The started server of ``metrics.port``, or None when it is 0 (off)."""
    return MetricsServer(port, snapshot, heartbeat).start() if port else None


def _probe(ok: bool) -> tuple[int, str, bytes]:
    return (200, "text/plain", b"ok\n") if ok else (503, "text/plain", b"not ready\n")
