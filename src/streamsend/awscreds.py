"""The ``aws.*`` properties as credentials, for every AWS client Streamsend makes (MSK
IAM tokens, the S3 destination).

``aws.access.key.id`` + ``aws.secret.access.key`` (+ ``aws.session.token``) when set,
else botocore's default chain (``AWS_*`` variables, ``~/.aws``, SSO, container and
instance roles). Nothing here logs or returns a secret: :func:`redact` is applied to
every error text built from a botocore exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from streamsend.config.settings import CommonSettings
from streamsend.errors import ConfigError


@dataclass(frozen=True)
class Given:
    """Credentials from the aws.* properties."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None

    def __repr__(self) -> str:  # never the secret, whatever prints this
        return f"Given(access_key_id={self.access_key_id!r}, ...)"


def given_credentials(settings: CommonSettings) -> Given | None:
    """The explicit credentials, or None for the default chain; raises ConfigError
    for half a key pair or a session token without keys."""
    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    if bool(key_id) != bool(secret):
        given, missing = ("aws.access.key.id", "aws.secret.access.key")[:: 1 if key_id else -1]
        raise ConfigError(
            f"{missing} is required with {given} (or set neither to use the default AWS "
            "credential chain)"
        )
    if settings.aws_session_token and not key_id:
        raise ConfigError(
            "aws.session.token needs aws.access.key.id and aws.secret.access.key "
            "(the chain finds its own session token)"
        )
    if not key_id:
        return None
    return Given(key_id, secret, settings.aws_session_token or None)


def secrets_of(settings: CommonSettings) -> list[str]:
    """The secret values an error text must never show."""
    return [s for s in (settings.aws_secret_access_key, settings.aws_session_token) if s]


def redact(exc: BaseException, secrets: list[str]) -> str:
    """One line naming ``exc``, with any secret replaced."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "(hidden)")
    return text


def quiet_botocore() -> None:
    """botocore's DEBUG lines show the canonical request (with the session token) and
    the signature: keep them out of --log.level DEBUG."""
    logging.getLogger("botocore").setLevel(logging.INFO)
    logging.getLogger("boto3").setLevel(logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.INFO)
