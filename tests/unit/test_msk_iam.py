"""AWS MSK IAM (sasl.mechanism=AWS_MSK_IAM): the token, its credentials, the client
configuration, and the errors. Fake credentials only; every socket is refused, so
nothing here can reach AWS (or anywhere)."""

from __future__ import annotations

import logging
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from msk_fakes import (
    ENV_KEY_ID,
    ENV_SECRET,
    ENV_SESSION,
    KEY_ID,
    REGION,
    SECRET,
    SESSION,
    TOKEN_PREFIX,
    decode,
    isolate_aws,
)
from streamsend.config.loader import describe, resolve
from streamsend.config.settings import CommonSettings, UploaderSettings
from streamsend.errors import ConfigError, ExitStatus, KafkaFatal
from streamsend.transport.kafka import client_config


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials from this machine, no metadata service, and no socket at all."""
    isolate_aws(monkeypatch, tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network call attempted: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def settings(**kw: Any) -> CommonSettings:
    kafka = kw.pop("kafka", {"sasl.mechanism": "AWS_MSK_IAM"})
    kw.setdefault("aws_region", REGION)
    return CommonSettings(bootstrap_servers="b-1.msk.example:9098", topic="t", kafka=kafka, **kw)


def explicit(**kw: Any) -> CommonSettings:
    return settings(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, **kw)


def use_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", ENV_SESSION)


def oauth_token(conf: dict[str, Any]) -> tuple[str, float]:
    token, expiry = conf["oauth_cb"](None)
    assert isinstance(token, str)
    assert isinstance(expiry, float)
    return token, expiry


def test_token_is_a_presigned_connect_url_in_base64url() -> None:
    before = time.time()
    token, expiry = oauth_token(client_config(explicit(aws_session_token=SESSION), "producer", {}))
    assert token.startswith(TOKEN_PREFIX)  # what the leak tests search for
    url, query = decode(token)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "kafka.eu-west-1.amazonaws.com",
        "/",
    )
    assert url.startswith("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&")
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    key_id, day, region, service, terminator = query["X-Amz-Credential"].split("/")
    assert (key_id, region, service, terminator) == (
        KEY_ID,
        "eu-west-1",
        "kafka-cluster",
        "aws4_request",
    )
    assert re.fullmatch(r"\d{8}", day)
    assert re.fullmatch(r"\d{8}T\d{6}Z", query["X-Amz-Date"])
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert query["X-Amz-Security-Token"] == SESSION
    assert query["User-Agent"].startswith("aws-msk-iam-sasl-signer-python/")
    # Expiry in seconds since the epoch (librdkafka's unit), 15 minutes ahead.
    assert before + 800 < expiry <= time.time() + 901


def test_first_token_is_made_up_front_and_each_refresh_signs_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    real = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider
    signed: list[str] = []

    def counting(region: str, provider: Any) -> Any:
        token, expiry_ms = real(region, provider)
        signed.append(token)
        return token, expiry_ms

    monkeypatch.setattr(
        MSKAuthTokenProvider, "generate_auth_token_from_credentials_provider", counting
    )
    conf = client_config(explicit(), "producer", {})
    assert len(signed) == 1  # at configuration: a credential problem fails before the client
    assert oauth_token(conf)[0] == signed[0]  # the client's first callback gets that token
    oauth_token(conf)  # librdkafka's refresh, before expiry
    assert len(signed) == 2


def test_explicit_properties_win_over_environment_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_env_credentials(monkeypatch)
    _, query = decode(oauth_token(client_config(explicit(), "producer", {}))[0])
    assert query["X-Amz-Credential"].startswith(KEY_ID + "/")
    # Long-term keys: no session token, not even the environment's.
    assert "X-Amz-Security-Token" not in query


def test_default_chain_is_used_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    use_env_credentials(monkeypatch)
    _, query = decode(oauth_token(client_config(settings(), "consumer", {}))[0])
    assert query["X-Amz-Credential"].startswith(ENV_KEY_ID + "/")
    assert query["X-Amz-Security-Token"] == ENV_SESSION


def test_default_chain_reads_a_credentials_file(tmp_path: Path) -> None:
    (tmp_path / "no-aws-credentials").write_text(
        f"[default]\naws_access_key_id = {ENV_KEY_ID}\naws_secret_access_key = {ENV_SECRET}\n"
    )
    _, query = decode(oauth_token(client_config(settings(), "admin", {}))[0])
    assert query["X-Amz-Credential"].startswith(ENV_KEY_ID + "/")


def config_error(s: CommonSettings) -> str:
    with pytest.raises(ConfigError) as info:
        client_config(s, "producer", {})
    assert info.value.exit_status == ExitStatus.CONFIG
    message = str(info.value)
    assert "\n" not in message
    for secret in (SECRET, SESSION):
        assert secret not in message
    return message


def test_no_credentials_anywhere_is_one_clear_line() -> None:
    message = config_error(settings())
    assert "no AWS credentials found" in message
    assert "aws.access.key.id" in message


def test_region_is_required() -> None:
    assert "aws.region is required" in config_error(explicit(aws_region=""))


def test_half_a_key_pair_names_the_missing_half() -> None:
    assert config_error(settings(aws_access_key_id=KEY_ID)).startswith(
        "aws.secret.access.key is required with aws.access.key.id"
    )
    assert config_error(settings(aws_secret_access_key=SECRET)).startswith(
        "aws.access.key.id is required with aws.secret.access.key"
    )
    assert "aws.session.token needs" in config_error(settings(aws_session_token=SESSION))


def test_signing_failure_is_kafka_fatal_without_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    def broken(region: str, provider: Any) -> Any:
        raise ValueError(f"cannot use {provider.load().secret_key}\nsecond line")

    monkeypatch.setattr(
        MSKAuthTokenProvider, "generate_auth_token_from_credentials_provider", broken
    )
    with pytest.raises(KafkaFatal) as info:
        client_config(explicit(), "producer", {})
    message = str(info.value)
    assert info.value.exit_status == ExitStatus.KAFKA_FATAL
    assert message.startswith("AWS MSK IAM: cannot sign a token for region 'eu-west-1': ValueError")
    assert SECRET not in message
    assert "\n" not in message


def test_refresh_failure_is_logged_once_and_raised_to_librdkafka(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    conf = client_config(explicit(), "producer", {})
    oauth_token(conf)  # the first token, made when the client was configured

    def broken(region: str, provider: Any) -> Any:
        raise RuntimeError("the clock is wrong")

    monkeypatch.setattr(
        MSKAuthTokenProvider, "generate_auth_token_from_credentials_provider", broken
    )
    with pytest.raises(KafkaFatal):
        conf["oauth_cb"](None)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "RuntimeError: the clock is wrong" in errors[0].getMessage()


# -- the client configuration ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["producer", "consumer", "admin"])
def test_every_client_gets_oauthbearer_with_the_callback(kind: Any) -> None:
    conf = client_config(explicit(), kind, {})
    assert conf["sasl.mechanism"] == "OAUTHBEARER"
    assert callable(conf["oauth_cb"])
    assert conf["security.protocol"] == "SASL_SSL"  # MSK offers IAM over TLS only
    assert "sasl.mechanisms" not in conf


def test_plural_property_name_and_any_case_are_accepted() -> None:
    s = explicit(kafka={"sasl.mechanisms": "aws_msk_iam", "security.protocol": "sasl_plaintext"})
    conf = client_config(s, "producer", {})
    assert conf["sasl.mechanism"] == "OAUTHBEARER"
    assert "sasl.mechanisms" not in conf
    assert conf["security.protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_a_protocol_without_sasl_is_refused(protocol: str) -> None:
    s = explicit(kafka={"sasl.mechanism": "AWS_MSK_IAM", "security.protocol": protocol})
    assert f"not {protocol}" in config_error(s)


def test_other_mechanisms_are_left_alone() -> None:
    s = explicit(kafka={"sasl.mechanism": "SCRAM-SHA-512", "security.protocol": "SASL_SSL"})
    conf = client_config(s, "producer", {})
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert "oauth_cb" not in conf


def test_botocore_debug_lines_never_carry_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    token, _ = oauth_token(client_config(explicit(aws_session_token=SESSION), "producer", {}))
    signature = decode(token)[1]["X-Amz-Signature"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (SECRET, SESSION, token, signature):
        assert secret not in logged


# -- the properties ----------------------------------------------------------------------


def test_properties_resolve_from_environment_and_stay_hidden() -> None:
    environ = {
        "STREAMSEND_AWS_REGION": "us-east-1",
        "STREAMSEND_AWS_ACCESS_KEY_ID": KEY_ID,
        "STREAMSEND_AWS_SECRET_ACCESS_KEY": SECRET,
        "STREAMSEND_AWS_SESSION_TOKEN": SESSION,
    }
    flags = {"bootstrap.servers": "b:9098", "topic": "t", "input.dir": "/data/in"}
    flags["sasl.mechanism"] = "AWS_MSK_IAM"
    s = resolve(UploaderSettings, environ=environ, flags=flags)
    assert (s.aws_region, s.aws_access_key_id) == ("us-east-1", KEY_ID)
    assert (s.aws_secret_access_key, s.aws_session_token) == (SECRET, SESSION)
    shown = describe(s)
    assert shown["aws.secret.access.key"] == "(hidden)"
    assert shown["aws.session.token"] == "(hidden)"
    assert SECRET not in repr(shown) and SESSION not in repr(shown)
