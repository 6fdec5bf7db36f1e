"""The S3 destination end to end: the real CLI, the real broker and a real S3-compatible
server (moto's standalone server over HTTP, tests/s3server.py). Files uploaded through
Kafka become objects ``{s3.prefix}{uploader}/{path}`` with their exact bytes and
metadata, whole or not at all: start-up errors are one line with a documented exit code,
an outage mid-upload is waited out, and a downloader killed mid-upload or just after
completing one leaves, after a restart, exactly one correct object and nothing behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Pipeline, age, explain, one_line_error, wait_for, write_random
from s3server import S3Server
from streamsend.errors import ExitStatus

pytestmark = pytest.mark.kafka

MIB = 1 << 20
PART = 5 * MIB  # s3.part.size.bytes: S3's minimum part size
CRASHING_CLI = Path(__file__).parents[1] / "defects" / "crashing_cli.py"


def build(root: Path, files: dict[str, int]) -> dict[str, Path]:
    """Write ``files`` (relative path -> size) under ``root``, old enough to be sent."""
    made = {}
    for i, (relative, size) in enumerate(files.items()):
        made[relative] = write_random(root / relative, size, seed=i + 1)
        age(made[relative])
    return made


def staged_parts(out: Path) -> list[Path]:
    staging = out / ".streamsend" / "staging"
    return sorted(staging.glob("*.part")) if staging.exists() else []


def delivered_locally(out: Path) -> list[str]:
    """Every file in output.dir outside its .streamsend bookkeeping area."""
    if not out.exists():
        return []
    return sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".streamsend" not in p.relative_to(out).parts
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- delivery -------------------------------------------------------------------------


def test_tree_round_trip_to_s3(pipeline: Pipeline, s3_server: S3Server, s3_bucket: str) -> None:
    source, out = pipeline.workdir / "in", pipeline.workdir / "out"
    files = {
        "empty": 0,
        "small.txt": 1234,
        "nested/a/b/c/deep.bin": 70_000,
        "big/multipart.bin": 3 * PART + 123_457,  # four parts, the last one short
        "données/日本語/ファイル.dat": 4321,
    }
    made = build(source, files)
    (source / "nested/a/b/c/deep.bin").chmod(0o755)
    (source / "small.txt").chmod(0o640)
    prefix = "archive/2026/"
    up = pipeline.upload(source, binary_chunk_size_bytes=str(MIB))
    assert up.returncode == 0, explain(up)
    props = s3_server.properties(
        s3_bucket, **{"s3.prefix": prefix, "s3.part.size.bytes": str(PART)}
    )
    down = pipeline.download(out, **props)
    assert down.returncode == 0, explain(down)

    expected = {f"{prefix}up1/{rel}": size for rel, size in files.items()}
    # Exactly these objects: nothing else, the start-up probe deleted.
    assert s3_server.objects(s3_bucket) == expected, explain(down)
    assert s3_server.unfinished_uploads(s3_bucket) == []
    for rel, path in made.items():
        key = f"{prefix}up1/{rel}"
        data = path.read_bytes()
        assert s3_server.body(s3_bucket, key) == data, key
        meta = s3_server.metadata(s3_bucket, key)
        st = os.stat(path)
        assert meta["sha256"] == hashlib.sha256(data).hexdigest(), key
        assert meta["mode"] == f"{st.st_mode & 0o7777:04o}", (key, meta)
        seconds, _, nanos = meta["mtime"].partition(".")
        assert int(seconds) == int(st.st_mtime), (key, meta)
        assert len(nanos) == 9 and nanos.isdigit(), (key, meta)
        whole, fraction = divmod(st.st_mtime_ns, 1_000_000_000)
        assert meta["mtime"] == f"{whole}.{fraction:09d}", (key, meta)  # to the nanosecond
        assert meta["uploader"] == "up1", (key, meta)
        assert meta["transfer"], (key, meta)
    # output.dir is only the staging area: nothing delivered there, nothing left staged.
    assert delivered_locally(out) == []
    assert sorted(p.name for p in out.iterdir()) == [".streamsend"]
    assert staged_parts(out) == []


def test_keep_local_copy(pipeline: Pipeline, s3_server: S3Server, s3_bucket: str) -> None:
    source, out = pipeline.workdir / "in", pipeline.workdir / "out"
    files = {"one.bin": 300_000, "sub/two-parts.bin": PART + 4096}
    made = build(source, files)
    up = pipeline.upload(source)
    assert up.returncode == 0, explain(up)
    props = s3_server.properties(
        s3_bucket, **{"s3.part.size.bytes": str(PART), "s3.keep.local.copy": "true"}
    )
    down = pipeline.download(out, **props)
    assert down.returncode == 0, explain(down)
    assert s3_server.objects(s3_bucket) == {f"up1/{rel}": size for rel, size in files.items()}
    assert delivered_locally(out) == sorted(f"up1/{rel}" for rel in files)
    for rel, path in made.items():
        data = path.read_bytes()
        assert s3_server.body(s3_bucket, f"up1/{rel}") == data, rel
        assert (out / "up1" / rel).read_bytes() == data, rel
    assert staged_parts(out) == []
    assert s3_server.unfinished_uploads(s3_bucket) == []


# -- start-up errors ------------------------------------------------------------------


def test_missing_bucket_is_one_line_exit_3(
    pipeline: Pipeline, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = "no-such-bucket-streamsend"
    down = pipeline.download(tmp_path / "out", **s3_server.properties(bucket))
    message = one_line_error(down, ExitStatus.ENVIRONMENT)
    assert bucket in message, message


@pytest.mark.parametrize("case", ["wrong-secret", "unknown-key-id", "user-without-s3"])
def test_refused_credentials_are_one_line_exit_5(
    pipeline: Pipeline, s3_server: S3Server, s3_bucket: str, tmp_path: Path, case: str
) -> None:
    if case == "wrong-secret":
        key_id, secret = s3_server.key_id, "Wr0ngSecretValueThatMustNotLeak1234567890"
    elif case == "unknown-key-id":
        key_id, secret = "AKIAUNKNOWNKEY000000", "UnknownKeysSecretThatMustNotLeak12345678"
    else:
        key_id, secret = s3_server.user_without_s3()
    props = s3_server.properties(
        s3_bucket, **{"aws.access.key.id": key_id, "aws.secret.access.key": secret}
    )
    down = pipeline.download(tmp_path / "out", **props)
    message = one_line_error(down, ExitStatus.KAFKA_FATAL)
    assert s3_bucket in message, message
    assert secret not in down.stderr + down.stdout
    assert s3_server.objects(s3_bucket) == {}


def test_unreachable_endpoint_is_one_line_exit_3(
    pipeline: Pipeline, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    props = s3_server.properties(s3_bucket, **{"s3.endpoint.url": endpoint})
    started = time.monotonic()
    down = pipeline.download(tmp_path / "out", **props)
    message = one_line_error(down, ExitStatus.ENVIRONMENT)
    assert endpoint in message, message
    assert s3_server.secret not in down.stderr + down.stdout
    assert time.monotonic() - started < 60, "a refused connection should fail fast"


# -- outage ---------------------------------------------------------------------------


class Outage:
    """A TCP relay in front of an S3 server: the downloader reaches the store only
    through it. :meth:`cut` refuses new connections and breaks those open (the store
    unreachable, mid-request); :meth:`mend` listens again on the same port. The store
    behind keeps its state, as a real one does through a network outage.

    (Not ``S3Server.stop()``/``restart()``: moto's server answers an UploadPart for an
    upload it does not know, as after a restart that emptied it, with 500 instead of
    S3's 404 NoSuchUpload, so a client doing what S3 documents never gets past it.)"""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None

    def mend(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._accepting = threading.Thread(target=self._accept, args=(self._listener,))
        self._accepting.daemon = True
        self._accepting.start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._accepting is not None:
            self._accepting.join(10)
        with self._lock:
            broken, self._sockets = self._sockets, []
        for sock in broken:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def outage(s3_outage_server: S3Server) -> Iterator[Outage]:
    relay = Outage(s3_outage_server.port)
    relay.mend()
    yield relay
    relay.cut()


def test_outage_mid_upload_is_waited_out(
    pipeline: Pipeline, s3_outage_server: S3Server, outage: Outage
) -> None:
    source, out = pipeline.workdir / "in", pipeline.workdir / "out"
    size = 26 * MIB + 777  # six parts
    (path,) = build(source, {"outage.bin": size}).values()
    key = "up1/outage.bin"
    up = pipeline.upload(source)
    assert up.returncode == 0, explain(up)
    props = {
        "output.dir": str(out),
        **s3_outage_server.properties(
            "outage", **{"s3.part.size.bytes": str(PART), "s3.endpoint.url": outage.url}
        ),
    }
    client = s3_outage_server.client()  # straight to the store, not through the relay

    def uploads() -> list[str]:
        listed = client.list_multipart_uploads(Bucket="outage").get("Uploads", [])
        return [u["UploadId"] for u in listed]

    def parts_stored() -> list[int]:
        """The part numbers the store holds of the upload under way."""
        begun = uploads()
        if not begun:
            return []
        listed = client.list_parts(Bucket="outage", Key=key, UploadId=begun[0])
        return [p["PartNumber"] for p in listed.get("Parts", [])]

    down = pipeline.start("download", props)
    # Cut once two parts are stored: the first is then confirmed to the downloader
    # (parts go one after the other), which must not send it again.
    wait_for(
        lambda: len(parts_stored()) >= 2 or down.proc.poll() is not None, 120, "two parts sent"
    )
    outage.cut()
    assert down.proc.poll() is None, down.output()[-4000:]
    # Caught mid-upload: begun, not completed (else the window is too small here).
    assert len(uploads()) == 1, "the upload completed before the outage"
    assert key not in s3_server_objects(client)
    wait_for(lambda: "consumption paused" in down.output(), 30, "the downloader to pause")
    assert "cannot deliver to s3://outage/" in down.output(), down.output()[-4000:]
    time.sleep(3)
    assert down.proc.poll() is None, down.output()[-4000:]
    assert key not in s3_server_objects(client)
    outage.mend()

    wait_for(
        lambda: key in s3_server_objects(client) or down.proc.poll() is not None,
        90,
        "the object after the outage",
    )
    assert down.proc.poll() is None, down.output()[-4000:]
    assert s3_outage_server.objects("outage") == {key: size}
    assert s3_outage_server.body("outage", key) == path.read_bytes()
    assert (
        s3_outage_server.metadata("outage", key)["sha256"]
        == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert uploads() == []  # the upload under way went on: completed, none left behind
    # Part 1, confirmed before the outage, was sent once: the upload went on where it
    # stopped (moto's request log).
    requests = "".join(p.read_text() for p in s3_outage_server.workdir.glob("moto-*.log"))
    sent = re.findall(r'"PUT /outage/up1/outage\.bin\?[^" ]*partNumber=(\d+)', requests)
    assert sent.count("1") == 1, sent
    assert sorted(set(sent)) == [str(n) for n in range(1, 7)], sent
    wait_for(lambda: not staged_parts(out), 30, "the staged copy deleted")
    wait_for(lambda: "available again" in down.output(), 30, "the resumed message")
    assert down.stop() == 0, down.output()[-4000:]


def test_s3_server_stopped_and_restarted_mid_upload(
    pipeline: Pipeline, s3_outage_server: S3Server
) -> None:
    """The S3 server process is killed in the middle of a multipart upload and started
    again, empty but for its bucket (moto keeps nothing): the upload under way is lost
    with it, and the downloader, which waited, sends the file again in a fresh upload."""
    source, out = pipeline.workdir / "in", pipeline.workdir / "out"
    size = 26 * MIB + 555  # six parts
    (path,) = build(source, {"restart.bin": size}).values()
    key = "up1/restart.bin"
    assert (up := pipeline.upload(source)).returncode == 0, explain(up)
    props = {
        "output.dir": str(out),
        **s3_outage_server.properties("outage", **{"s3.part.size.bytes": str(PART)}),
    }
    client = s3_outage_server.client()
    down = pipeline.start("download", props)
    wait_for(
        lambda: (
            down.proc.poll() is not None
            or bool(client.list_multipart_uploads(Bucket="outage").get("Uploads"))
        ),
        120,
        "the multipart upload to begin",
    )
    s3_outage_server.stop()
    assert down.proc.poll() is None, down.output()[-4000:]
    wait_for(lambda: "consumption paused" in down.output(), 60, "the downloader to pause")
    assert staged_parts(out), "the staged copy must wait for the store"
    s3_outage_server.restart()
    client = s3_outage_server.client()
    wait_for(
        lambda: key in s3_server_objects(client) or down.proc.poll() is not None,
        180,
        "the object after the restart",
    )
    assert down.proc.poll() is None, down.output()[-4000:]
    assert s3_outage_server.objects("outage") == {key: size}
    assert s3_outage_server.body("outage", key) == path.read_bytes()
    assert client.list_multipart_uploads(Bucket="outage").get("Uploads", []) == []
    wait_for(lambda: not staged_parts(out), 30, "the staged copy deleted")
    assert down.stop() == 0, down.output()[-4000:]


def s3_server_objects(client: Any) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket="outage").get("Contents", [])}


# -- killed mid-upload -----------------------------------------------------------------


@pytest.mark.parametrize(("operation", "nth"), [("UploadPart", 2), ("CompleteMultipartUpload", 1)])
def test_killed_during_multipart_upload(
    pipeline: Pipeline, s3_server: S3Server, s3_bucket: str, operation: str, nth: int
) -> None:
    source, out = pipeline.workdir / "in", pipeline.workdir / "out"
    size = 3 * PART + 99_999
    (path,) = build(source, {"killed.bin": size}).values()
    key = "up1/killed.bin"
    up = pipeline.upload(source)
    assert up.returncode == 0, explain(up)
    props = s3_server.properties(s3_bucket, **{"s3.part.size.bytes": str(PART)})

    crashed = crashing_download(pipeline, out, props, operation, nth)
    assert crashed.returncode == -signal.SIGKILL, explain(crashed)
    assert len(staged_parts(out)) == 1, explain(crashed)  # not delivered as far as it knows
    if operation == "UploadPart":
        assert s3_server.objects(s3_bucket) == {}  # nothing visible of a partial upload
        assert s3_server.unfinished_uploads(s3_bucket) == [key]
        again = pipeline.download(out, **props)
    else:
        assert s3_server.objects(s3_bucket) == {key: size}
        assert s3_server.unfinished_uploads(s3_bucket) == []
        # The object is found there (same transfer, same SHA-256) and not sent again:
        # a new multipart upload of it would kill this run.
        again = crashing_download(pipeline, out, props, "CreateMultipartUpload", 1)
    assert again.returncode == 0, explain(again)
    assert s3_server.objects(s3_bucket) == {key: size}, explain(again)
    assert s3_server.body(s3_bucket, key) == path.read_bytes()
    assert s3_server.unfinished_uploads(s3_bucket) == [], explain(again)
    assert staged_parts(out) == []
    assert delivered_locally(out) == []


def crashing_download(
    pipeline: Pipeline, out: Path, props: dict[str, str], operation: str, nth: int
) -> subprocess.CompletedProcess[str]:
    """A bounded download run through crashing_cli.py, SIGKILLed right after the
    ``nth`` successful S3 call ``operation``."""
    cmd = pipeline._command(
        "download", {"output.dir": str(out), "idle.exit.ms": "4000", **props}, ()
    )
    assert cmd[1:3] == ["-m", "streamsend"], cmd
    cmd[1:3] = [str(CRASHING_CLI)]
    env = {**os.environ, "S3_CRASH_AFTER": operation, "S3_CRASH_NTH": str(nth)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    (pipeline.logs / f"crashing-download-{operation}.log").write_text(done.stderr)
    return done


def test_encrypted_files_are_delivered_to_s3_in_the_clear(
    pipeline: Pipeline, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """S3 is another delivery step behind the same staging and verification: files
    encrypted end to end (and small ones packed) reach the bucket decrypted, whole."""
    made = subprocess.run(
        [sys.executable, "-m", "streamsend", "keygen", "-o", str(tmp_path / "id.key")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    source, out = pipeline.workdir / "in", pipeline.workdir / "out"
    files = build(source, {"a/small.txt": 900, "b/small2.txt": 3000, "big.bin": 12 * MIB})
    up = pipeline.upload(source, encryption_recipients=made.stdout.strip())
    assert up.returncode == 0, explain(up)
    props = s3_server.properties(
        s3_bucket,
        **{
            "s3.part.size.bytes": str(PART),
            "encryption.identity.file": str(tmp_path / "id.key"),
        },
    )
    down = pipeline.download(out, **props)
    assert down.returncode == 0, explain(down)
    assert s3_server.objects(s3_bucket) == {f"up1/{r}": p.stat().st_size for r, p in files.items()}
    for relative, path in files.items():
        assert s3_server.body(s3_bucket, f"up1/{relative}") == path.read_bytes(), relative
    assert staged_parts(out) == []
