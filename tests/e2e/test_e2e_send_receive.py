"""``streamsend send`` and ``streamsend receive`` on the real broker: a file and a tree
round trip with receive started before and after the send, exiting 0 on its own; a
manifest naming a file that never arrives ends receive with exit 6 naming it; a plain
``download`` of the same topic delivers the files without a word about manifests; an
encrypted round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_e2e_cli_errors import one_line_error, streamsend
from test_e2e_encryption import keygen

from defects.records import produce
from harness import explain, write_random
from streamsend.errors import ExitStatus
from streamsend.wire.protocol import Manifest, ManifestEntry, encode, new_transfer_id

pytestmark = pytest.mark.kafka


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    one = write_random(tmp_path / "src" / "report.bin", 200_000, seed=1)
    tree = tmp_path / "src" / "photos"
    write_random(tree / "a.jpg", 3000, seed=2)
    write_random(tree / "deep" / "b.raw", 70_000, seed=3)
    (tree / "empty.txt").write_bytes(b"")
    return one, tree


def _common(bootstrap: str, topic: str) -> list[str]:
    return ["--topic", topic, "--bootstrap.servers", bootstrap, "--uploader.name", "me"]


def _receive(bootstrap: str, topic: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    args = ["receive", "--topic", topic, "--bootstrap.servers", bootstrap]
    return subprocess.Popen(
        [sys.executable, "-m", "streamsend", *args, "--output.dir", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _received(
    bootstrap: str, topic: str, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``receive`` run to its end."""
    args = ["--topic", topic, "--bootstrap.servers", bootstrap, "--output.dir", str(out)]
    return streamsend("receive", *args, *extra)


def _same(one: Path, tree: Path, got: Path) -> None:
    assert (got / "report.bin").read_bytes() == one.read_bytes()
    for rel in ("a.jpg", "deep/b.raw", "empty.txt"):
        assert (got / "photos" / rel).read_bytes() == (tree / rel).read_bytes()


def test_send_then_receive_before_and_after(
    bootstrap_servers: str, unique_topic: str, tmp_path: Path
) -> None:
    one, tree = _sources(tmp_path)
    early = _receive(bootstrap_servers, unique_topic, tmp_path / "early", "--timeout", "60")
    sent = streamsend("send", str(one), str(tree), *_common(bootstrap_servers, unique_topic))
    assert sent.returncode == 0, explain(sent)
    assert "4 files" in sent.stdout and "all acknowledged" in sent.stdout
    out, err = early.communicate(timeout=90)
    assert early.returncode == 0, err
    assert "4 files" in out and "all verified" in out
    _same(one, tree, tmp_path / "early" / "me")
    late = _received(
        bootstrap_servers,
        unique_topic,
        tmp_path / "late",
        "--timeout",
        "60",
    )
    assert late.returncode == 0, explain(late)
    _same(one, tree, tmp_path / "late" / "me")
    # A plain downloader delivers the same files and says nothing about the manifest.
    down = streamsend(
        "download",
        "--topic",
        unique_topic,
        "--bootstrap.servers",
        bootstrap_servers,
        "--output.dir",
        str(tmp_path / "plain"),
        "--idle.exit.ms",
        "3000",
    )
    assert down.returncode == 0, explain(down)
    assert "manifest" not in down.stderr.lower() and "skipping" not in down.stderr
    _same(one, tree, tmp_path / "plain" / "me")


def test_same_name_twice_is_refused(tmp_path: Path) -> None:
    a = write_random(tmp_path / "a" / "x.bin", 10)
    b = write_random(tmp_path / "b" / "x.bin", 10)
    refused = streamsend("send", str(a), str(b), "--topic", "t", "--bootstrap.servers", "x:1")
    assert "both be sent as 'x.bin'" in one_line_error(refused, ExitStatus.CONFIG)


def test_missing_file_named_after_timeout(
    bootstrap_servers: str, unique_topic: str, tmp_path: Path
) -> None:
    entry = ManifestEntry(new_transfer_id(), "lost/never.bin", 5, "0" * 64)
    key, headers, value = encode(Manifest(new_transfer_id(), "ghost", (entry,)))
    produce(bootstrap_servers, unique_topic, [{"key": key, "headers": headers, "value": value}])
    got = _received(
        bootstrap_servers,
        unique_topic,
        tmp_path / "out",
        "--timeout",
        "4",
    )
    assert "'ghost/lost/never.bin'" in one_line_error(got, ExitStatus.INCOMPLETE)


def test_encrypted_round_trip(bootstrap_servers: str, unique_topic: str, tmp_path: Path) -> None:
    one, tree = _sources(tmp_path)
    recipient = keygen(tmp_path / "id.txt")
    common = _common(bootstrap_servers, unique_topic)
    sent = streamsend("send", str(one), str(tree), *common, "--encryption.recipients", recipient)
    assert sent.returncode == 0, explain(sent)
    got = _received(
        bootstrap_servers,
        unique_topic,
        tmp_path / "out",
        "--encryption.identity.file",
        str(tmp_path / "id.txt"),
        "--timeout",
        "60",
    )
    assert got.returncode == 0, explain(got)
    _same(one, tree, tmp_path / "out" / "me")
