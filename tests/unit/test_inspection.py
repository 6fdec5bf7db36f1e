"""The bookkeeping of ``streamsend inspect`` (inspection.py): records in, summary out."""

from __future__ import annotations

import json

import pyrage

from streamsend.inspection import Inspection, render_text
from streamsend.transport.base import Received
from streamsend.wire.codecs import NO_CODEC
from streamsend.wire.protocol import Abort, Chunk, End, Message, Pack, encode, new_transfer_id
from streamsend.wire.sealed import Opener, Sealer

SHA = "ab" * 32
ENDS = {0: (0, 10), 1: (0, 0)}


def as_bytes(headers: list[tuple[str, str | bytes | None]]) -> list[tuple[str, bytes | None]]:
    return [(n, v.encode() if isinstance(v, str) else v) for n, v in headers]


class Topic:
    """Records as the transport hands them over, one partition, offsets in order."""

    def __init__(self) -> None:
        self.records: list[Received] = []

    def add(self, msg: Message, partition: int = 0) -> None:
        key, headers, value = encode(msg)
        self.raw(
            key,
            as_bytes(headers),
            value,
            partition,
        )

    def raw(self, key, headers, value, partition: int = 0) -> None:
        self.records.append(Received("t", partition, len(self.records), key, headers, value))


def chunked(topic: Topic, path: str, sizes: list[int], end: bool = True, skip=()) -> str:
    t = new_transfer_id()
    offset = 0
    for i, n in enumerate(sizes):
        if i not in skip:
            topic.add(Chunk(t, "up", path, i, offset, sum(sizes), b"x" * n))
        offset += n
    if end:
        topic.add(End(t, "up", path, sum(sizes), len(sizes), SHA, 0, 0o644))
    return t


def inspect(topic: Topic, opener: Opener | None = None) -> Inspection:
    return Inspection(opener).add_all(topic.records)


def only(found: Inspection, transfer: str) -> dict:
    return found.versions[transfer].document()


def test_complete_and_incomplete_versions() -> None:
    topic = Topic()
    done = chunked(topic, "a.bin", [4, 4, 2])
    no_end = chunked(topic, "b.bin", [4, 4], end=False)
    gap = chunked(topic, "c.bin", [4, 4, 4], skip={1})
    empty = chunked(topic, "empty", [])
    found = inspect(topic)
    assert only(found, done) | {"first": None, "last": None} == {
        "transfer": done,
        "status": "complete",
        "size": 10,
        "chunks": 3,
        "chunks_expected": 3,
        "packed": False,
        "encrypted": False,
        "first": None,
        "last": None,
    }
    assert only(found, done)["first"] == {"partition": 0, "offset": 0}
    assert only(found, done)["last"] == {"partition": 0, "offset": 3}
    assert (only(found, no_end)["status"], only(found, no_end)["chunks_expected"]) == (
        "incomplete",
        None,
    )
    assert only(found, no_end)["size"] == 8  # declared by its chunks
    assert (only(found, gap)["status"], only(found, gap)["chunks"]) == ("incomplete", 2)
    assert only(found, empty)["status"] == "complete"
    totals = found.totals()
    assert totals == {
        "files": 4,
        "versions": 4,
        "complete": 2,
        "incomplete": 2,
        "aborted": 0,
        "unverified": 0,
        "encrypted": 0,
        "bytes": 10 + 8 + 12,
    }


def test_duplicates_do_not_count_twice_and_order_does_not_matter() -> None:
    topic = Topic()
    t = new_transfer_id()
    topic.add(End(t, "up", "a", 8, 2, SHA, 0, 0o644), partition=1)
    for _ in range(2):
        topic.add(Chunk(t, "up", "a", 1, 4, 8, b"y" * 4))
    topic.add(Chunk(t, "up", "a", 0, 0, 8, b"x" * 4))
    v = only(inspect(topic), t)
    assert (v["status"], v["chunks"], v["chunks_expected"]) == ("complete", 2, 2)
    assert v["first"] == {"partition": 0, "offset": 1}
    assert v["last"] == {"partition": 1, "offset": 0}


def test_aborted_and_two_versions_of_one_path() -> None:
    topic = Topic()
    old = chunked(topic, "a.bin", [3])
    torn = chunked(topic, "a.bin", [3], end=False)
    topic.add(Abort(torn, "up", "a.bin", "changed while read"))
    new = chunked(topic, "a.bin", [5])
    found = inspect(topic)
    [(uploader, path, versions)] = found.files()
    assert (uploader, path) == ("up", "a.bin")
    assert [(v.transfer, v.status) for v in versions] == [
        (old, "complete"),
        (torn, "aborted"),
        (new, "complete"),
    ]
    assert found.totals()["files"] == 1
    assert found.totals()["aborted"] == 1


def test_pack_files_are_one_chunk_each() -> None:
    topic = Topic()
    a = End(new_transfer_id(), "up", "small/a", 3, 1, SHA, 0, 0o644)
    e = End(new_transfer_id(), "up", "small/e", 0, 0, SHA, 0, 0o644)
    topic.add(Pack("up", ((a, b"abc"), (e, b""))))
    found = inspect(topic)
    assert only(found, a.transfer)["status"] == "complete"
    assert only(found, a.transfer)["packed"] is True
    assert (only(found, a.transfer)["chunks"], only(found, a.transfer)["chunks_expected"]) == (1, 1)
    assert (only(found, e.transfer)["chunks"], only(found, e.transfer)["chunks_expected"]) == (0, 0)
    assert [p for _, p, _ in found.files()] == ["small/a", "small/e"]


def sealed_topic(recipient: object, end: bool = True) -> tuple[Topic, str]:
    sealer = Sealer([recipient], True, 4096)
    seal = sealer.new_file()
    topic = Topic()
    msgs: list[Message] = [Chunk(seal.transfer, "up", "secret.csv", 0, 0, 5, b"hello")]
    if end:
        msgs.append(End(seal.transfer, "up", "secret.csv", 5, 1, SHA, 0, 0o600))
    for msg in msgs:
        key, headers, value = sealer.encode(msg, NO_CODEC, seal)
        topic.raw(
            key,
            as_bytes(headers),
            value,
        )
    pack_seal = sealer.new_file()
    packed = End(new_transfer_id(), "up", "packed.txt", 2, 1, SHA, 0, 0o644)
    key, headers, value = sealer.encode(Pack("up", ((packed, b"hi"),)), NO_CODEC, pack_seal)
    topic.raw(
        key,
        as_bytes(headers),
        value,
    )
    return topic, seal.transfer


def test_sealed_with_the_key_shows_paths() -> None:
    identity = pyrage.x25519.Identity.generate()
    topic, transfer = sealed_topic(identity.to_public())
    found = inspect(topic, Opener([identity]))
    v = only(found, transfer)
    assert (v["status"], v["encrypted"], v["size"]) == ("complete", True, 5)
    assert [p for _, p, _ in found.files()] == ["packed.txt", "secret.csv"]
    assert found.totals()["encrypted"] == 2


def test_sealed_without_a_key_lists_uploader_and_transfer() -> None:
    identity = pyrage.x25519.Identity.generate()
    topic, transfer = sealed_topic(identity.to_public())
    other = pyrage.x25519.Identity.generate()
    for opener in (None, Opener([other])):
        found = inspect(topic, opener)
        v = only(found, transfer)
        assert (v["status"], v["encrypted"], v["size"], v["chunks"]) == (
            "unverified",
            True,
            None,
            1,
        )
        assert [(u, p) for u, p, _ in found.files()] == [("up", None), ("up", None)]
        assert found.totals()["unverified"] == 2
        text = render_text(found, "t", ENDS)
        assert "up (encrypted, no key)" in text
        assert transfer in text
        assert "secret.csv" not in text and "packed.txt" not in text
    no_end, transfer = sealed_topic(identity.to_public(), end=False)
    assert only(inspect(no_end), transfer)["status"] == "incomplete"


def test_foreign_and_malformed_records_are_counted() -> None:
    topic = Topic()
    done = chunked(topic, "a", [2])
    topic.raw(b"k", [("other", b"x")], b"someone else's")
    topic.raw(None, None, None)
    topic.raw(b"k", [("streamsend.version", b"2"), ("streamsend.type", b"chunk")], b"x")
    topic.raw(b"k", [("streamsend.version", b"9")], b"x")
    sealed_junk = [
        ("streamsend.version", b"3"),
        ("streamsend.type", b"chunk"),
        ("streamsend.uploader", b"up"),
        ("streamsend.transfer", b"0" * 32),
    ]
    topic.raw(b"k", sealed_junk, b"\x02garbage")
    found = inspect(topic, Opener([pyrage.x25519.Identity.generate()]))
    assert vars(found.counts) == {"records": 7, "foreign": 2, "malformed": 2, "unsupported": 1}
    assert only(found, done)["status"] == "complete"


def test_untrusted_names_are_escaped_in_text_and_json() -> None:
    topic = Topic()
    chunked(topic, "evil\x1b]0;pwned\x07\n.txt", [1])
    found = inspect(topic)
    text = render_text(found, "t", ENDS)
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b]0;pwned\\x07\\n.txt" in text
    assert len(text.splitlines()) == 4  # header, file, version, totals
    document = json.dumps(found.document("t", ENDS))
    assert "\x1b" not in document and "\n" not in document
    assert json.loads(document)["files"][0]["path"] == "evil\x1b]0;pwned\x07\n.txt"
    assert json.loads(document)["partitions"] == [
        {"partition": 0, "start": 0, "end": 10},
        {"partition": 1, "start": 0, "end": 0},
    ]
