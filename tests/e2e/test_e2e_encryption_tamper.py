"""Tampering with an encrypted upload: the records of a real upload copied to a fresh topic
with the plain client (partitions kept), altered on the way. Every altered file is
rejected or stays incomplete, never delivered; the downloader keeps delivering the rest."""

from __future__ import annotations

import re
import struct
from collections import defaultdict
from pathlib import Path

import pytest
from test_e2e_encryption import CHUNK, delivered, keygen, upload

from defects.records import Consumed, Record, produce, read_topic
from harness import Pipeline, age, create_topic, explain, write_random
from streamsend.errors import ExitStatus

pytestmark = pytest.mark.kafka

PARTITIONS = 4
# Chunk counts tell the files apart on the topic (a reader sees only the transfer id).
CHUNKED = {
    "flipped.bin": 2,  # one byte of a chunk's ciphertext flipped
    "moved-from.bin": 3,  # its chunk 1 is moved into moved-to.bin
    "moved-to.bin": 4,  # its chunk 1 replaced by moved-from.bin's, with its transfer id
    "truncated.bin": 5,  # its last chunk dropped
    "reordered.bin": 6,  # chunks 1 and 2 exchange their index and offset
    "endless.bin": 7,  # its end record dropped
    "intact.bin": 8,  # untouched
}
AUTHENTICATION = "a sealed record failed authentication"
MOVED = "a sealed record carries the key of another transfer"


def write_files(source: Path, counts: dict[str, int]) -> None:
    for seed, (name, chunks) in enumerate(counts.items()):
        # One byte more than chunks - 1 full chunks: ``chunks`` records once the sealing
        # overhead is taken from each.
        age(write_random(source / name, (chunks - 1) * CHUNK + 1, seed=seed))


def chunk_counts(log: str) -> dict[int, str]:
    sending = re.findall(r"sending '([^']+)' \(\d+ bytes, (\d+) chunks\)", log)
    counts = {int(chunks): name for name, chunks in sending}
    assert len(counts) == len(sending), f"chunk counts do not tell the files apart: {sending}"
    return counts


def header(record: Consumed, name: str) -> bytes:
    value = record.header(name)
    assert value is not None, (name, record)
    return value


def with_headers(record: Consumed, **changed: bytes) -> Record:
    """``record`` as keyword arguments for produce, on its partition, headers changed
    (``transfer=`` sets streamsend.transfer)."""
    names = {f"streamsend.{name}": value for name, value in changed.items()}
    headers = [(name, names.get(name, value)) for name, value in record.headers]
    return {
        "key": record.key,
        "value": record.value,
        "headers": headers,
        "partition": record.partition,
    }


def flip_ciphertext(record: Consumed) -> Record:
    """One bit flipped inside the AES-GCM ciphertext (past the envelope and nonce)."""
    value = bytearray(record.value or b"")
    (wrapped,) = struct.unpack_from(">H", value, 1)
    value[3 + wrapped + 12 + 40] ^= 0x01
    return {**with_headers(record), "value": bytes(value)}


def tampered_copy(records: list[Consumed], names: dict[int, str]) -> list[Record]:
    """The records in topic order per partition, with every alteration applied."""
    by_transfer: dict[bytes, list[Consumed]] = defaultdict(list)
    for record in records:
        if record.header("streamsend.type") in (b"chunk", b"end"):
            by_transfer[header(record, "streamsend.transfer")].append(record)
    files: dict[str, dict[str, Consumed]] = {}
    for group in by_transfer.values():
        chunks = [r for r in group if header(r, "streamsend.type") == b"chunk"]
        parts = {f"chunk{header(r, 'streamsend.index').decode()}": r for r in chunks}
        parts["end"] = next(r for r in group if header(r, "streamsend.type") == b"end")
        files[names[len(chunks)]] = parts
    assert set(CHUNKED) <= set(files), sorted(files)

    def at(name: str, part: str) -> Consumed:
        return files[name][part]

    reordered = (at("reordered.bin", "chunk1"), at("reordered.bin", "chunk2"))
    swapped = {
        id(one): with_headers(
            one,
            index=header(other, "streamsend.index"),
            offset=header(other, "streamsend.offset"),
        )
        for one, other in (reordered, reordered[::-1])
    }
    target = at("moved-to.bin", "chunk1")
    moved = with_headers(
        at("moved-from.bin", "chunk1"), transfer=header(target, "streamsend.transfer")
    )
    replaced: dict[int, Record | None] = {
        id(at("flipped.bin", "chunk1")): flip_ciphertext(at("flipped.bin", "chunk1")),
        id(at("moved-from.bin", "chunk1")): None,
        id(target): {**moved, "partition": target.partition},
        id(at("truncated.bin", f"chunk{CHUNKED['truncated.bin'] - 1}")): None,
        id(at("endless.bin", "end")): None,
        **swapped,
    }
    copied = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        new = replaced.get(id(record), with_headers(record))
        if new is not None:
            copied.append(new)
    assert len(copied) == len(records) - 3
    return copied


def test_tampered_records_are_rejected_and_never_delivered(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=PARTITIONS)
    recipient = keygen(tmp_path / "id")
    source, out = tmp_path / "in", tmp_path / "out"
    write_files(source, CHUNKED)
    (source / "sub").mkdir()
    for name in ("note.txt", "sub/memo.txt"):
        (source / name).write_text(f"{name} travels in a pack\n")
        age(source / name)
    sealing = {"encryption_recipients": recipient, "pack_file_max_bytes": "1000"}
    log, _ = upload(pipeline, source, **sealing)
    # A second upload: on every partition its records come after the altered ones.
    write_files(source, {"later.bin": 9})
    later_log, sent = upload(pipeline, source, **sealing)
    assert sent == ["later.bin"], later_log
    names = {**chunk_counts(log), **chunk_counts(later_log)}

    copy = f"{pipeline.topic}-tampered"
    create_topic(pipeline.bootstrap, copy, partitions=PARTITIONS)
    original = read_topic(pipeline.bootstrap, pipeline.topic)
    produce(pipeline.bootstrap, copy, tampered_copy(original, names))

    down = pipeline.download(out, 3000, topic=copy, encryption_identity_file=str(tmp_path / "id"))
    # Files left incomplete are named and make a bounded run fail; the others went on.
    assert down.returncode == ExitStatus.INCOMPLETE, explain(down)
    errors = [line for line in down.stderr.splitlines() if "streamsend: error:" in line]
    assert len(errors) == 1, explain(down)
    for name in ("moved-from.bin", "truncated.bin", "endless.bin"):
        assert f"'up1/{name}'" in errors[0], errors
    for name, reason in (
        ("flipped.bin", AUTHENTICATION),
        ("moved-to.bin", MOVED),
        ("reordered.bin", AUTHENTICATION),
    ):
        assert f"rejected 'up1/{name}': {reason}" in down.stderr, explain(down)
    assert "Traceback" not in down.stderr

    untouched = {"intact.bin", "later.bin", "note.txt", "sub/memo.txt"}
    assert delivered(out) == {f"up1/{name}" for name in untouched}, explain(down)
    for name in untouched:
        assert (out / "up1" / name).read_bytes() == (source / name).read_bytes()
    altered = set(CHUNKED) - {"intact.bin"}
    assert not [p for p in out.rglob("*") if p.name in altered]
