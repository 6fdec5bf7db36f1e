"""AWS MSK IAM on the real broker, as far as a machine without AWS allows: librdkafka
calls our token callback and takes the token; the CLI in that mode, against a broker that
does not offer OAUTHBEARER, stops with one line and exit 5; and no secret, session token
or token appears in any output, at DEBUG with librdkafka's debug=all, or in --help.

Fake credentials; botocore is kept off the network (no metadata service, no ~/.aws, a
proxy on a closed local port), and the only connections are to the local broker."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest

from harness import explain
from msk_fakes import (
    KEY_ID,
    REGION,
    SECRET,
    SESSION,
    TOKEN_PREFIX,
    decode,
    isolate_aws,
    offline_aws_environment,
)
from streamsend.config.settings import CommonSettings
from streamsend.errors import ExitStatus
from streamsend.transport.kafka import client_config

pytestmark = pytest.mark.kafka

MSK_FLAGS = ("--security.protocol", "SASL_PLAINTEXT", "--sasl.mechanism", "AWS_MSK_IAM")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_librdkafka_calls_our_oauth_cb_and_takes_the_token(
    bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_aws(monkeypatch, tmp_path)
    settings = CommonSettings(
        bootstrap_servers=bootstrap_servers,
        topic="unused",
        aws_region=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        aws_session_token=SESSION,
        kafka={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "AWS_MSK_IAM"},
    )
    conf = client_config(settings, "producer", {})
    assert conf["sasl.mechanism"] == "OAUTHBEARER"
    ours = conf["oauth_cb"]
    handed: list[tuple[str, float]] = []

    def recording(oauthbearer_config: str | None) -> Any:
        handed.append(ours(oauthbearer_config))
        return handed[-1]

    errors: list[ck.KafkaError] = []
    librdkafka_log = logging.getLogger("test.msk.librdkafka")
    records = _Records()
    librdkafka_log.addHandler(records)
    librdkafka_log.setLevel(logging.DEBUG)
    conf.update(
        oauth_cb=recording, error_cb=errors.append, logger=librdkafka_log, debug="security,broker"
    )
    producer = ck.Producer(conf)  # waits until a token is set (10 s at most)
    try:
        assert len(handed) >= 1, "librdkafka never asked for a token"
        token, expiry = handed[0]
        assert decode(token)[1]["X-Amz-Credential"].startswith(KEY_ID + "/")
        assert expiry > time.time() + 600
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            producer.poll(0.2)
    finally:
        producer.flush(0)
    # librdkafka's own word that it took the token...
    assert any("after setting OAUTHBEARER token" in line for line in records.lines), records.lines
    assert not any("Failed to acquire SASL OAUTHBEARER token" in e.str() for e in errors)
    # ... and went on to the SASL handshake, which this broker refuses (no OAUTHBEARER).
    assert errors, "the broker's refusal never reached error_cb"
    assert errors[0].code() == ck.KafkaError._AUTHENTICATION, errors[0].str()
    assert "OAUTHBEARER" in errors[0].str()


def streamsend(tmp_path: Path, *args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI with fake AWS credentials in the environment, kept off the network."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMSEND_", "AWS_"))}
    environ.update(offline_aws_environment(tmp_path))
    environ.update(
        STREAMSEND_AWS_REGION=REGION,
        STREAMSEND_AWS_ACCESS_KEY_ID=KEY_ID,
        STREAMSEND_AWS_SECRET_ACCESS_KEY=SECRET,
        STREAMSEND_AWS_SESSION_TOKEN=SESSION,
    )
    extra = ("--log.level", "DEBUG", "--debug", "all") if debug else ()
    return subprocess.run(
        [sys.executable, "-m", "streamsend", *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    for stream in (result.stdout, result.stderr):
        for secret in (SECRET, SESSION, TOKEN_PREFIX, "X-Amz-Signature", "X-Amz-Credential"):
            assert secret not in stream, f"{secret[:12]}... appears in the output"


@pytest.mark.parametrize("debug", [False, True], ids=["info", "debug-all"])
def test_upload_against_a_broker_without_oauthbearer_stops_with_one_line(
    bootstrap_servers: str, unique_topic: str, tmp_path: Path, debug: bool
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.txt").write_text("hello")
    started = time.monotonic()
    result = streamsend(
        tmp_path,
        "upload",
        "--bootstrap.servers",
        bootstrap_servers,
        "--topic",
        unique_topic,
        "--input.dir",
        str(inbox),
        "--once",
        *MSK_FLAGS,
        debug=debug,
    )
    assert time.monotonic() - started < 60, "retried instead of giving up"
    errors = [line for line in result.stderr.splitlines() if line.startswith("streamsend: error")]
    assert result.returncode == ExitStatus.KAFKA_FATAL, explain(result)
    assert len(errors) == 1, explain(result)
    assert "SASL OAUTHBEARER mechanism handshake failed" in errors[0]
    assert "Traceback" not in result.stderr
    if debug:  # the run really signed and handed over a token it then kept to itself
        assert "after setting OAUTHBEARER token" in result.stderr
    assert_no_secret(result)


def test_help_shows_no_secret_from_the_environment(tmp_path: Path) -> None:
    for command in ("upload", "download"):
        result = streamsend(tmp_path, command, "--help")
        assert result.returncode == 0, explain(result)
        assert "--aws.secret.access.key" in result.stdout
        assert_no_secret(result)
