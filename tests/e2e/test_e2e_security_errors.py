"""Refused by a secure broker: wrong password, unknown user, untrusted broker certificate,
missing client certificate. For the uploader and the downloader, through the real CLI on
the real broker of ``kafka up --secure``: one line naming the cause, exit 5, within
seconds (not an endless retry); at DEBUG with librdkafka's debug=all and --traceback,
no secret in the output. And no secret in --help.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from security_support import (
    VERBOSE,
    leaked,
    refusal_line,
    role_args,
    secrets_of,
    streamsend,
    variant,
)
from streamsend import localkafka
from streamsend.errors import ExitStatus
from streamsend.localkafka import nodeconfig, tls

pytestmark = pytest.mark.kafka

WRONG_PASSWORD = "wrong-Pa55word-that-must-not-show"
SASL_FAILED = "SASL authentication failed"
UNTRUSTED = "the broker's TLS certificate is not trusted"
NO_CLIENT_CERT = "the broker requires a client certificate"

# case: (client file it starts from, changes, the cause the one line must name)
CASES: dict[str, tuple[str, dict[str, str | None], str]] = {
    "wrong-password-scram": (
        nodeconfig.CLIENT_SASL_SCRAM_FILE, {"sasl.password": WRONG_PASSWORD}, SASL_FAILED
    ),
    "wrong-password-plain": (
        nodeconfig.CLIENT_SASL_PLAIN_FILE, {"sasl.password": WRONG_PASSWORD}, SASL_FAILED
    ),
    "unknown-user-scram": (
        nodeconfig.CLIENT_SASL_SCRAM_FILE, {"sasl.username": "nobody"}, SASL_FAILED
    ),
    "unknown-user-plain": (
        nodeconfig.CLIENT_SASL_PLAIN_FILE, {"sasl.username": "nobody"}, SASL_FAILED
    ),
    "untrusted-broker-certificate-sasl": (
        nodeconfig.CLIENT_SASL_SCRAM_FILE, {"ssl.ca.location": "OTHER_CA"}, UNTRUSTED
    ),
    "untrusted-broker-certificate-mtls": (
        nodeconfig.CLIENT_MTLS_FILE, {"ssl.ca.location": "OTHER_CA"}, UNTRUSTED
    ),
    "missing-client-certificate": (
        nodeconfig.CLIENT_MTLS_FILE,
        {"ssl.certificate.location": None, "ssl.key.location": None},
        NO_CLIENT_CERT,
    ),
    "client-certificate-of-another-ca": (
        nodeconfig.CLIENT_MTLS_FILE,
        {"ssl.certificate.location": "OTHER_CERT", "ssl.key.location": "OTHER_KEY"},
        NO_CLIENT_CERT,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tls.Material]:
    """Certificates of a CA the broker has never heard of."""
    yield tls.ensure(tmp_path_factory.mktemp("other-ca"))


def case_config(
    cluster: localkafka.Cluster, other: tls.Material, case: str, workdir: Path
) -> tuple[Path, str]:
    base, changes, cause = CASES[case]
    stand_ins = {
        "OTHER_CA": str(other.ca_cert),
        "OTHER_CERT": str(other.client_cert),
        "OTHER_KEY": str(other.client_key),
    }
    resolved = {k: stand_ins.get(v, v) if v else v for k, v in changes.items()}
    return variant(cluster.client_file(base), workdir / f"{case}.properties", **resolved), cause


@pytest.mark.parametrize("role", ["upload", "download"])
@pytest.mark.parametrize("case", list(CASES))
def test_refusal_is_one_line_exit_5_and_no_secret_at_debug(
    secure_cluster: localkafka.Cluster,
    other_ca: tls.Material,
    case: str,
    role: str,
    unique_topic: str,
    tmp_path: Path,
) -> None:
    config, cause = case_config(secure_cluster, other_ca, case, tmp_path)
    workdir = tmp_path / "dir"
    workdir.mkdir()
    (workdir / "a.txt").write_text("hello\n")

    done, seconds = streamsend(role, config, unique_topic, *role_args(role, workdir))
    line = refusal_line(done, seconds)
    assert line.startswith(f"streamsend: error: Kafka refused the connection: {cause}")

    loud, _ = streamsend(role, config, unique_topic, *role_args(role, workdir), *VERBOSE)
    assert loud.returncode == ExitStatus.KAFKA_FATAL, loud.stderr[-3000:]
    secrets = [*secrets_of(secure_cluster), WRONG_PASSWORD]
    assert leaked(loud.stdout + loud.stderr, secrets) == []


def test_help_shows_no_secret_even_with_secrets_in_the_environment(
    secure_cluster: localkafka.Cluster,
) -> None:
    secrets = secrets_of(secure_cluster)
    env = {
        **os.environ,
        "STREAMSEND_SASL_PASSWORD": secrets[0],
        "STREAMSEND_SSL_KEY_PEM": secrets[2],
    }
    for args in (
        ["upload", "--help"],
        ["download", "--help"],
        ["kafka", "up", "--help"],
        ["--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "streamsend", *args],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert leaked(done.stdout + done.stderr, secrets) == [], args
