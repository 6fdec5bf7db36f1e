"""Configuration that cannot work is a clear one-line error and a non-zero exit; retrying
for ever is kept for a broker that is merely unreachable."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import tmpfs
from streamsend import localkafka
from streamsend.errors import ExitStatus


def streamsend(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamsend", *args], capture_output=True, text=True, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("streamsend: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.parametrize("role", ["upload", "download"])
def test_unknown_host_is_fatal(role: str, tmp_path: Path) -> None:
    where = ["--input.dir", str(tmp_path)] if role == "upload" else ["--output.dir", str(tmp_path)]
    args = [role, "--bootstrap.servers", "no-such-host.invalid:9092", "--topic", "t", *where]
    result = streamsend(*args, *(["--once"] if role == "upload" else []))
    assert result.returncode == ExitStatus.KAFKA_FATAL, result.stderr[-3000:]
    assert "Failed to resolve" in one_line_error(result)


def test_input_dir_that_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = streamsend("upload", "--bootstrap.servers", "127.0.0.1:1", "--topic", "t",
                        "--input.dir", str(tmp_path / "file"), "--once")  # fmt: skip
    assert result.returncode == ExitStatus.ENVIRONMENT
    assert "is not a directory" in one_line_error(result)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only filesystem: unwritable even for root, which ignores permission bits."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        yield mount


def test_unwritable_output_dir(read_only_dir: Path) -> None:
    result = streamsend("download", "--bootstrap.servers", "127.0.0.1:1", "--topic", "t",
                        "--output.dir", str(read_only_dir / "out"))  # fmt: skip
    assert result.returncode == ExitStatus.ENVIRONMENT
    assert "is not writable" in one_line_error(result)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local broker with an extra SASL/PLAIN listener; yields its address."""
    directory = tmp_path_factory.mktemp("kafka-sasl")
    first = localkafka.up(dir=directory, port=0, heap_mb=256)
    localkafka.down(directory)  # now we know its ports; add a SASL listener
    node = first.nodes[0]
    sasl_port = _free_port()
    listeners = (f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:"
                 f"{node.controller_port},SASL://127.0.0.1:{sasl_port}")  # fmt: skip
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'user_alice="alice-secret";')  # fmt: skip
    extra = {
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl.plain.sasl.jaas.config": jaas,
    }
    localkafka.up(dir=directory, extra_properties=extra)
    try:
        yield f"127.0.0.1:{sasl_port}"
    finally:
        localkafka.down(directory)


@pytest.mark.kafka
@pytest.mark.slow
def test_failed_authentication_is_fatal_and_secret_not_printed(
    sasl_cluster: str, tmp_path: Path
) -> None:
    common = ["--bootstrap.servers", sasl_cluster, "--topic", "t",
              "--security.protocol", "SASL_PLAINTEXT", "--sasl.mechanism", "PLAIN",
              "--sasl.username", "alice"]  # fmt: skip
    wrong = streamsend("upload", *common, "--sasl.password", "wrong-password-123",
                       "--input.dir", str(tmp_path), "--once", "--log.level", "DEBUG")  # fmt: skip
    assert wrong.returncode == ExitStatus.KAFKA_FATAL, wrong.stderr[-3000:]
    assert "Authentication failed" in one_line_error(wrong) or "SASL" in one_line_error(wrong)
    assert "wrong-password-123" not in wrong.stderr + wrong.stdout
    # The same listener with the right password works: the failure was the credential.
    right = streamsend("upload", *common, "--sasl.password", "alice-secret",
                       "--input.dir", str(tmp_path), "--once")  # fmt: skip
    assert right.returncode == 0, right.stderr[-3000:]
