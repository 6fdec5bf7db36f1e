"""End-to-end encryption (issue 9), on the real broker through the public CLI: the round
trip, what a reader of the raw topics sees, downloaders without the key, several
recipients, keygen, configuration errors and the sealed state. Tampering is in
test_e2e_encryption_tamper.py."""

from __future__ import annotations

import re
import stat
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
from test_e2e_cli_errors import one_line_error, streamsend, upload_args
from test_e2e_state import files_done, sent_names, topic_names

from defects.records import Consumed, read_topic
from harness import Pipeline, Process, age, count_records, create_topic, explain, write_random
from streamsend.errors import ExitStatus
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka

CHUNK = 16384
KEY_FILE = ".streamsend-uploader.key"
NO_KEY = "holds no key for it"


def keygen(path: Path) -> str:
    """A new identity in ``path`` through ``streamsend keygen``; returns its recipient."""
    made = streamsend("keygen", "-o", str(path))
    assert made.returncode == 0, explain(made)
    return made.stdout.strip()


def upload(
    pipeline: Pipeline, source: Path, name: str = "up1", **props: str
) -> tuple[str, list[str]]:
    """``upload --once`` with this test's own state topic and small chunks; returns its
    log and the files it sent."""
    base = {
        "processing_state_topic": state_topic(pipeline),
        "processing_state_topic_partitions": "1",
        "binary_chunk_size_bytes": str(CHUNK),
    }
    done = pipeline.upload(source, name, **{**base, **props})
    assert done.returncode == 0, explain(done)
    return done.stderr, sent_names(done.stderr)


def state_topic(pipeline: Pipeline) -> str:
    return f"{pipeline.topic}-state"


def download(
    pipeline: Pipeline, runs: dict[Path, dict[str, str]], idle_ms: int = 3000
) -> dict[Path, str]:
    """One downloader per output dir (its own group), all at once; each must exit 0.
    Returns their logs."""
    started: dict[Path, Process] = {
        out: pipeline.start(
            "download", {"output.dir": str(out), "idle.exit.ms": str(idle_ms), **props}
        )
        for out, props in runs.items()
    }
    for process in started.values():
        assert process.wait(120) == 0, process.output()
    return {out: process.output() for out, process in started.items()}


def identity(path: Path) -> dict[str, str]:
    return {"encryption.identity.file": str(path)}


def write_tree(root: Path, tag: str) -> dict[str, Path]:
    """A multi-chunk file, small packed files, a subdirectory and an empty file, with
    modes and mtimes of their own; every name and content carries ``tag``."""
    files = {
        "big": write_random(root / f"big-{tag}.bin", 5 * CHUNK + 123, seed=1),
        "small": root / f"small-{tag}.txt",
        "nested": root / f"dir-{tag}" / f"nested-{tag}.csv",
        "empty": root / f"dir-{tag}" / f"empty-{tag}",
    }
    files["nested"].parent.mkdir(parents=True)
    files["small"].write_text(f"small {tag}\n")
    files["nested"].write_text(f"nested,{tag}\n" * 50)
    files["empty"].write_bytes(b"")
    files["small"].chmod(0o640)
    files["big"].chmod(0o755)
    for i, path in enumerate(files.values()):
        age(path, 3600 + 61 * i)
    return files


def delivered(root: Path) -> set[str]:
    """Every regular file under ``root``, hidden bookkeeping (.streamsend) aside."""
    if not root.exists():
        return set()
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".streamsend" not in p.relative_to(root).parts
    }


def fields(record: Consumed) -> Iterable[bytes]:
    """Every byte a topic reader sees of a record: key, header names and values, value."""
    yield record.key or b""
    yield record.value or b""
    for name, value in record.headers:
        yield name.encode()
        yield value or b""


def leaks(records: list[Consumed], secrets: list[str]) -> list[str]:
    found = []
    for record in records:
        for secret in secrets:
            if any(secret.encode() in field for field in fields(record)):
                found.append(f"{secret!r} in partition {record.partition}@{record.offset}")
    return found


def kind(record: Consumed) -> bytes | None:
    return record.header("streamsend.type")


def test_encrypted_round_trip_keeps_bytes_mode_and_mtime(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=2)
    recipient = keygen(tmp_path / "id")
    source, out = tmp_path / "in", tmp_path / "out"
    write_tree(source, "rt")
    log, sent = upload(pipeline, source, encryption_recipients=recipient)
    assert "end-to-end encryption on: 1 recipient(s), padding chunk" in log, log
    assert len(sent) == 4, log
    assert re.search(r"sending 'big-rt.bin' \(\d+ bytes, [4-9] chunks\)", log), log
    download(pipeline, {out: identity(tmp_path / "id")})
    assert compare_trees(source, out / "up1") == []
    assert (out / "up1" / "dir-rt" / "empty-rt").stat().st_size == 0


@pytest.mark.parametrize("padding", ["chunk", "none"])
def test_raw_topics_show_neither_contents_nor_names(
    pipeline: Pipeline, tmp_path: Path, padding: str
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=2)
    recipient = keygen(tmp_path / "id")
    source, out = tmp_path / "in", tmp_path / "out"
    tag = uuid.uuid4().hex[:12]
    marker = f"PLAINTEXT-{tag}-"
    names = [f"quokka{tag}", f"wombat{tag}", f"numbat{tag}"]
    # A compressible multi-chunk file and a packed one, both holding the marker, in a
    # subdirectory whose name is as distinctive as theirs.
    text = "".join(f"{marker}{i:08d} the same words again and again\n" for i in range(4000))
    (source / names[2]).mkdir(parents=True)
    (source / names[2] / f"{names[0]}.log").write_text(text)
    (source / f"{names[1]}.txt").write_text(marker + "a small file\n")
    for path in source.rglob("*.*"):
        age(path)
    log, sent = upload(
        pipeline,
        source,
        encryption_recipients=recipient,
        encryption_padding=padding,
        compression_type="zstd",
    )
    assert sorted(sent) == sorted([f"{names[1]}.txt", f"{names[2]}/{names[0]}.log"]), log

    data = read_topic(pipeline.bootstrap, pipeline.topic)
    state = read_topic(pipeline.bootstrap, state_topic(pipeline))
    assert len(state) == 2 and len(data) > 2
    assert leaks(data + state, [marker, *names]) == []
    assert {r.header("streamsend.version") for r in data} == {b"3"}
    assert {r.key for r in data} == {b"up1"}
    carrying = [r for r in data if kind(r) in (b"chunk", b"pack")]
    lengths = {len(r.value or b"") for r in carrying}
    if padding == "chunk":
        # Every record with file bytes is exactly one chunk long: sizes do not show.
        assert lengths == {CHUNK}, lengths
    else:
        # Records keep their compressed length: compression happened before encryption.
        assert sum(lengths) < len(text) // 10, lengths
        assert len(lengths) > 1, lengths

    download(pipeline, {out: identity(tmp_path / "id")})
    assert compare_trees(source, out / "up1") == []


def test_padding_hides_the_size_of_a_packed_file_larger_than_a_chunk(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """With binary.chunk.size.bytes below pack.file.max.bytes (64 KiB by default) a file
    between the two is packed: its record must still be one chunk long, or its length
    tells the file's size to a few bytes."""
    create_topic(pipeline.bootstrap, pipeline.topic)
    recipient = keygen(tmp_path / "id")
    source = tmp_path / "in"
    age(write_random(source / "between.bin", 2 * CHUNK + 1000, seed=7))
    (source / "tiny.txt").write_text("tiny\n")
    age(source / "tiny.txt")
    log, sent = upload(pipeline, source, encryption_recipients=recipient)
    assert sorted(sent) == ["between.bin", "tiny.txt"], log
    data = read_topic(pipeline.bootstrap, pipeline.topic)
    lengths = sorted(len(r.value or b"") for r in data if kind(r) in (b"chunk", b"pack"))
    assert set(lengths) == {CHUNK}, lengths


def test_downloaders_without_the_key_skip_those_files_and_deliver_the_rest(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=2)
    theirs, mine = keygen(tmp_path / "theirs.key"), keygen(tmp_path / "mine.key")
    sources = {name: tmp_path / name for name in ("secret", "clear", "mine")}
    for name, source in sources.items():
        write_tree(source, name)
    upload(pipeline, sources["secret"], "secret", encryption_recipients=theirs)
    upload(pipeline, sources["clear"], "clear")
    upload(pipeline, sources["mine"], "mine", encryption_recipients=mine)

    other, keyless = tmp_path / "out-other-key", tmp_path / "out-no-identity"
    runs = {other: identity(tmp_path / "mine.key"), keyless: {}}
    outputs = download(pipeline, runs)

    assert compare_trees(sources["clear"], other / "clear") == []
    assert compare_trees(sources["mine"], other / "mine") == []
    assert compare_trees(sources["clear"], keyless / "clear") == []
    assert {p.name for p in other.iterdir()} == {".streamsend", "clear", "mine"}
    assert {p.name for p in keyless.iterdir()} == {".streamsend", "clear"}
    for out in runs:
        assert list((out / ".streamsend" / "staging").iterdir()) == []

    # Once per file (per record for a pack: its files are not known without the key).
    data = read_topic(pipeline.bootstrap, pipeline.topic)
    for out, unreadable in ((other, {b"secret"}), (keyless, {b"secret", b"mine"})):
        log = outputs[out]
        foreign = [r for r in data if r.header("streamsend.uploader") in unreadable]
        transfers = {r.header("streamsend.transfer") for r in foreign if kind(r) != b"pack"}
        packs = [r for r in foreign if kind(r) == b"pack"]
        assert len(transfers) == len(unreadable) and packs, foreign
        lines = [line for line in log.splitlines() if NO_KEY in line]
        for transfer in transfers:
            assert transfer is not None
            assert sum(transfer.decode() in line for line in lines) == 1, log
        assert sum("a pack of small files" in line for line in lines) == len(packs), log
        assert len(lines) == len(transfers) + len(packs), log
        assert "Traceback" not in log and "rejected" not in log, log


def test_several_recipients_and_an_identity_file_of_several_identities(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=2)
    keys = tmp_path / "keys"
    keys.mkdir()
    first, second = keygen(keys / "first"), keygen(keys / "second")
    keygen(keys / "unrelated")
    listed = tmp_path / "recipients.txt"
    listed.write_text(f"# the second mirror\n\n   \n  {second}  \n# done\n")
    # An age identity file of several identities, comments between them.
    several = keys / "several"
    several.write_text((keys / "unrelated").read_text() + "\n" + (keys / "second").read_text())
    source = tmp_path / "in"
    write_tree(source, "multi")
    log, _ = upload(
        pipeline,
        source,
        encryption_recipients=first,
        encryption_recipients_file=str(listed),
    )
    assert "end-to-end encryption on: 2 recipient(s)" in log, log
    outs = {
        tmp_path / "out-first": identity(keys / "first"),
        tmp_path / "out-second": identity(keys / "second"),
        tmp_path / "out-several": identity(several),
    }
    download(pipeline, outs)
    for out in outs:
        assert compare_trees(source, out / "up1") == [], out


def test_keygen_writes_a_private_identity_and_never_prints_one(tmp_path: Path) -> None:
    path = tmp_path / "id"
    made = streamsend("keygen", "-o", str(path))
    assert made.returncode == 0, explain(made)
    assert re.fullmatch(r"age1[02-9ac-hj-np-z]{58}\n", made.stdout), made.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    secret = re.findall(r"^AGE-SECRET-KEY-1[0-9A-Z]+$", text, re.MULTILINE)
    assert len(secret) == 1 and made.stdout.strip() in text
    assert secret[0] not in made.stdout + made.stderr

    again = streamsend("keygen", "-o", str(path))
    assert "refusing to overwrite" in one_line_error(again, ExitStatus.CONFIG)
    assert path.read_text() == text

    bare = streamsend("keygen")
    assert bare.returncode != 0
    assert "AGE-SECRET-KEY" not in bare.stdout + bare.stderr
    assert bare.stdout == ""
    one_line_error(bare, ExitStatus.CONFIG)


def test_encryption_configuration_errors(pipeline: Pipeline, tmp_path: Path) -> None:
    recipient = keygen(tmp_path / "id")
    secret = next(
        line for line in (tmp_path / "id").read_text().splitlines() if line.startswith("AGE-")
    )
    source = tmp_path / "in"
    source.mkdir()
    base = upload_args(pipeline, source, "--once")

    typo = recipient[:-3] + ("qqq" if not recipient.endswith("qqq") else "ppp")
    for bad in (typo, "age1notakey", "ssh-ed25519 AAAAC3Nz", f"{recipient},oops"):
        result = streamsend(*base, "--encryption.recipients", bad)
        assert "encryption.recipients" in one_line_error(result, ExitStatus.CONFIG), bad

    result = streamsend(*base, "--encryption.recipients", f"{recipient},{secret}")
    message = one_line_error(result, ExitStatus.CONFIG)
    assert "secret key" in message
    secret_part = secret.removeprefix("AGE-SECRET-KEY-1")
    for text in (result.stdout, result.stderr):
        assert secret_part not in text and secret_part.lower() not in text

    # The same secret key in a recipients file: named by file and line, never quoted.
    listed = tmp_path / "recipients.txt"
    listed.write_text(f"# keys\n{recipient}\n{secret}\n")
    result = streamsend(*base, "--encryption.recipients.file", str(listed))
    assert "line 3" in one_line_error(result, ExitStatus.CONFIG)
    assert secret_part not in result.stdout + result.stderr

    missing = tmp_path / "no-such-identity"
    result = pipeline.download(tmp_path / "out", 1000, encryption_identity_file=str(missing))
    assert "encryption.identity.file" in one_line_error(result, ExitStatus.CONFIG)
    # Nothing was sent or consumed: every error came before the broker.
    assert pipeline.topic not in topic_names(pipeline.bootstrap)


def test_state_is_sealed_and_turning_encryption_on_sends_again(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create_topic(pipeline.bootstrap, pipeline.topic, partitions=2)
    recipient = keygen(tmp_path / "id")
    source, out = tmp_path / "in", tmp_path / "out"
    files = write_tree(source, "state")
    everything = sorted(p.relative_to(source).as_posix() for p in files.values())

    # In the clear first: state records keyed by path.
    _, sent = upload(pipeline, source)
    assert sorted(sent) == everything
    assert not (source / KEY_FILE).exists()
    clear_keys = {f"{pipeline.topic}/up1/{path}".encode() for path in everything}
    records = read_topic(pipeline.bootstrap, state_topic(pipeline))
    assert {r.key for r in records} == clear_keys

    # Encryption on: every file again, sealed; the old records get tombstones.
    log, sent = upload(pipeline, source, encryption_recipients=recipient)
    assert sorted(sent) == everything, log
    assert "not sealed with its key" in log, log
    key_file = source / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    records = read_topic(pipeline.bootstrap, state_topic(pipeline))
    latest = {r.key: r.value for r in records}
    assert {k for k in clear_keys if latest.get(k, b"") is None} == clear_keys
    sealed = [r for r in records if r.key not in clear_keys]
    assert len(sealed) == len(everything)
    assert all(r.value and not r.value.startswith(b"{") for r in sealed)
    assert leaks(sealed, [path.name for path in files.values()]) == []

    # Unchanged files: nothing is sent, the sealed state is read back.
    before = count_records(pipeline.bootstrap, pipeline.topic)
    log, sent = upload(pipeline, source, encryption_recipients=recipient)
    assert sent == [] and files_done(log) == 0, log
    assert f"state: {len(everything)} file(s) already sent" in log, log
    assert count_records(pipeline.bootstrap, pipeline.topic) == before
    assert KEY_FILE not in log

    download(pipeline, {out: identity(tmp_path / "id")})
    assert compare_trees(source, out / "up1") == []
    # The uploader key file lives in input.dir and is never sent.
    assert delivered(out) == {f"up1/{path}" for path in everything}
