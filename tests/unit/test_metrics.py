"""The metrics server: the documented series with the snapshot's values, and the probes."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamsend import metrics
from streamsend.metrics import Heartbeat, MetricsServer, Snapshot


def get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def downloader() -> Iterator[tuple[MetricsServer, Snapshot, Heartbeat]]:
    snap = Snapshot(
        "downloader",
        files={"delivered": 3, "rejected": 1},
        bytes=12345,
        skipped={"no_key": 2},
        staging_transfers=4,
        staging_bytes=999,
        paused_for_disk=True,
        paused_for_destination=True,
        lag={0: 5, 3: 0},
        last_success=1_700_000_000.5,
        connected=True,
        assigned=True,
    )
    beat = Heartbeat()
    server = MetricsServer(0, lambda: snap, beat, host="127.0.0.1").start()
    yield server, snap, beat
    server.stop()


def test_downloader_series_carry_the_snapshot(downloader) -> None:
    server, _, _ = downloader
    status, text = get(server, "/metrics")
    assert status == 200
    found = samples(text)
    p = "streamsend_downloader"
    assert found[(f"{p}_files_total", (("outcome", "delivered"),))] == 3
    assert found[(f"{p}_files_total", (("outcome", "rejected"),))] == 1
    assert found[(f"{p}_bytes_total", ())] == 12345
    assert found[(f"{p}_records_skipped_total", (("reason", "no_key"),))] == 2
    assert found[(f"{p}_staging_transfers", ())] == 4
    assert found[(f"{p}_staging_bytes", ())] == 999
    assert found[(f"{p}_paused_for_disk", ())] == 1
    assert found[(f"{p}_paused_for_destination", ())] == 1
    assert found[(f"{p}_consumer_lag", (("partition", "0"),))] == 5
    assert found[(f"{p}_last_success_timestamp_seconds", ())] == 1_700_000_000.5
    assert found[(f"{p}_kafka_connected", ())] == 1


def test_uploader_series() -> None:
    snap = Snapshot("uploader", files={"sent": 7}, bytes=70, in_flight=2, connected=False)
    server = MetricsServer(0, lambda: snap, Heartbeat(), host="127.0.0.1").start()
    try:
        found = samples(get(server, "/metrics")[1])
    finally:
        server.stop()
    assert found[("streamsend_uploader_files_total", (("outcome", "sent"),))] == 7
    assert found[("streamsend_uploader_transfers_in_flight", ())] == 2
    assert found[("streamsend_uploader_kafka_connected", ())] == 0


def test_probes_follow_the_loop_and_the_connection(downloader, monkeypatch) -> None:
    server, snap, _ = downloader
    assert get(server, "/healthz")[0] == 200
    assert get(server, "/readyz")[0] == 200
    snap.assigned = False
    assert get(server, "/readyz")[0] == 503
    snap.assigned, snap.connected = True, False
    assert get(server, "/readyz")[0] == 503
    monkeypatch.setattr(metrics, "STALL_SECONDS", 0.0)
    assert get(server, "/healthz")[0] == 503
    assert get(server, "/nothing")[0] == 404


def test_a_port_in_use_is_one_clear_error(downloader) -> None:
    server, snap, beat = downloader
    with pytest.raises(Exception, match=f"metrics.port {server.port}: cannot listen"):
        MetricsServer(server.port, lambda: snap, beat, host="127.0.0.1")
