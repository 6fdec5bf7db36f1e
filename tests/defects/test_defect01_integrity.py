"""Defect 1: a chunk that overlaps bytes already received must not slip past the SHA-256."""

from __future__ import annotations

import hashlib

import pytest
from defect_runs import Cli, rejected
from records import Transfer, chunk, produce

from harness import create_topic, explain

pytestmark = pytest.mark.kafka


def test_overlapping_foreign_chunk_never_delivers_unverified_bytes(cli: Cli, tmp_path) -> None:
    """Defect 1: genuine chunks [0,10) and [10,20) with a foreign chunk [5,11) of other bytes
    between them (same transfer, uploader, path and declared size), then the genuine end
    record. Whatever the downloader decides, the file at its final path is never one whose
    bytes differ from the end record's SHA-256: it is either rejected or exactly right."""
    create_topic(cli.bootstrap, cli.topic)
    genuine = Transfer("up1", "overlap.bin", bytes(range(65, 85)), chunk_size=10)
    foreign = chunk(genuine.transfer, "up1", "overlap.bin", 1, 5, 20, b"XXXXXX")
    produce(cli.bootstrap, cli.topic, [genuine.chunk(0), foreign, genuine.chunk(1), genuine.end()])

    out = tmp_path / "out"
    down = cli.download(out)
    assert down.returncode in (0, 6), explain(down)
    assert "Traceback" not in down.stderr, explain(down)
    final = out / "up1" / "overlap.bin"
    if final.exists():
        got = final.read_bytes()
        assert hashlib.sha256(got).hexdigest() == genuine.sha256, (
            f"delivered {got!r}, whose SHA-256 is not the end record's ({genuine.data!r})\n"
            + explain(down)
        )
    else:
        assert rejected(out), "neither delivered nor rejected\n" + explain(down)
