"""Helpers for the transport-security tests: the client property files of a
``kafka up --secure`` cluster, variants of them, the CLI run with ``--config``, and the
secrets that must never appear in any output."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import javaproperties

from streamsend import localkafka
from streamsend.errors import ExitStatus
from streamsend.localkafka import nodeconfig, tls

# Each transport mode and the client property file `kafka up --secure` writes for it
# (None: the plaintext listener, from the cluster's bootstrap.servers).
MODES: dict[str, str | None] = {
    "plaintext": None,
    "mtls": nodeconfig.CLIENT_MTLS_FILE,
    "sasl-ssl-plain": nodeconfig.CLIENT_SASL_PLAIN_FILE,
    "sasl-ssl-scram": nodeconfig.CLIENT_SASL_SCRAM_FILE,
}
# The output of a run whose logs may hold anything librdkafka says.
VERBOSE = ("--log.level", "DEBUG", "--debug", "all", "--traceback")


def client_file(cluster: localkafka.Cluster, mode: str, workdir: Path) -> Path:
    """The property file for ``mode``; plaintext gets one written into ``workdir``."""
    name = MODES[mode]
    if name is not None:
        return cluster.client_file(name)
    path = workdir / "client-plaintext.properties"
    path.write_text(f"bootstrap.servers={cluster.bootstrap_servers}\n", encoding="utf-8")
    return path


def variant(base: Path, target: Path, **changes: str | None) -> Path:
    """A copy of the property file ``base`` with properties changed (None removes one);
    keyword ``sasl_password`` names ``sasl.password``."""
    with base.open(encoding="utf-8") as fp:
        props: dict[str, str] = dict(javaproperties.load(fp))
    for key, value in changes.items():
        name = key.replace("_", ".")
        if value is None:
            props.pop(name, None)
        else:
            props[name] = value
    target.write_text(javaproperties.dumps(props, timestamp=False), encoding="utf-8")
    return target


def streamsend(
    role: str, config: Path, topic: str, *args: str, timeout: float = 180
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``streamsend ROLE --config CONFIG --topic TOPIC ARGS``; the result and seconds taken."""
    cmd = [sys.executable, "-m", "streamsend", role, "--config", str(config), "--topic", topic]
    begin = time.monotonic()
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - begin


# A refusal arrives within a second; the rest is Python and librdkafka starting up.
REFUSAL_MAX_SECONDS = 20


def refusal_line(done: subprocess.CompletedProcess[str], seconds: float) -> str:
    """The one stderr line of a run Kafka refused: exit 5, in seconds, nothing else."""
    assert done.returncode == ExitStatus.KAFKA_FATAL, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert seconds < REFUSAL_MAX_SECONDS, f"{seconds:.1f} s to give up"
    assert done.stdout == ""
    return lines[0]


def role_args(role: str, directory: Path) -> list[str]:
    """What a bounded run of ``role`` needs besides its config: its directory and an end."""
    if role == "upload":
        return ["--input.dir", str(directory), "--once", "--uploader.name", "sec",
                "--file.minimum.age.ms", "0"]  # fmt: skip
    return ["--output.dir", str(directory), "--idle.exit.ms", "4000"]


def secrets_of(cluster: localkafka.Cluster) -> list[str]:
    """Every secret of a secure cluster: the SASL passwords and each line of the body of
    every private key (the CA's, the broker's, the client's)."""
    pem = tls.material(cluster.dir)
    credentials = pem.credentials()
    found = [credentials.plain_password, credentials.scram_password]
    for path in (pem.client_key, pem.broker_keystore, pem.directory / tls.CA_KEY):
        found += private_key_lines(path.read_text(encoding="ascii"))
    return found


def private_key_lines(text: str) -> list[str]:
    lines = text.splitlines()
    begin, end = (
        lines.index("-----BEGIN PRIVATE KEY-----"),
        lines.index("-----END PRIVATE KEY-----"),
    )
    body = lines[begin + 1 : end]
    assert body, "an empty private key"
    return body


def leaked(output: str, secrets: list[str]) -> list[str]:
    """The secrets found in ``output`` (shown only by their first characters)."""
    return [f"{secret[:4]}..." for secret in secrets if secret in output]
