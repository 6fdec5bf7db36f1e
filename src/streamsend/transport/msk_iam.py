"""AWS MSK IAM authentication, the original Streamsend's ``sasl.mechanism=AWS_MSK_IAM``.

Amazon MSK's IAM access control is SASL/OAUTHBEARER whose token is a SigV4-presigned
``kafka-cluster:Connect`` URL, base64url-encoded. AWS's own
``aws-msk-iam-sasl-signer-python`` builds it; this module is its typed facade and turns
the ``aws.*`` properties into librdkafka's OAUTHBEARER settings with an ``oauth_cb``,
which librdkafka calls again before each token expires (at 80 % of its 15 minutes).

Credentials: ``aws.access.key.id`` + ``aws.secret.access.key`` (+ ``aws.session.token``)
when set, else botocore's default chain (``AWS_*`` variables, ``~/.aws``, SSO, container
and instance roles), whose refreshable credentials are kept and re-read at each token.
Signing is local: no call leaves the machine unless the chain itself needs one (STS,
instance metadata).

Nothing here logs or raises a secret: errors name the property or the botocore error
class, and botocore's own DEBUG lines (which show the canonical request with the session
token, and the signature) are kept out of the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamsend.awscreds import Given, given_credentials, quiet_botocore, redact, secrets_of
from streamsend.config.settings import CommonSettings
from streamsend.errors import ConfigError, KafkaFatal

log = logging.getLogger(__name__)

MECHANISM = "AWS_MSK_IAM"
_MECHANISM_KEYS = ("sasl.mechanism", "sasl.mechanisms")
_SASL_PROTOCOLS = {"SASL_SSL", "SASL_PLAINTEXT"}

# (token, expiry in seconds since the epoch): what confluent-kafka's oauth_cb returns.
Token = tuple[str, float]


def wanted(kafka: Mapping[str, str]) -> bool:
    """Whether the user's librdkafka properties ask for AWS MSK IAM."""
    return any(kafka.get(key, "").strip().upper() == MECHANISM for key in _MECHANISM_KEYS)


def _check(settings: CommonSettings) -> Given | None:
    """Validate the aws.* properties; the explicit credentials, or None for the chain."""
    if not settings.aws_region:
        raise ConfigError(
            f"aws.region is required with sasl.mechanism={MECHANISM} (the region of the MSK "
            "cluster, such as us-east-1)"
        )
    return given_credentials(settings)


class TokenSource:
    """Makes MSK IAM tokens for one Kafka client; :meth:`oauth_cb` is librdkafka's
    callback. The first token is made at once, so a missing credential is an error
    at start-up rather than a client waiting for a token."""

    def __init__(self, settings: CommonSettings) -> None:
        self._region = settings.aws_region
        self._given = _check(settings)
        self._secrets = secrets_of(settings)
        self._chain: Any = None  # botocore credentials of the default chain, once found
        self._primed: Token | None = self.token()

    def token(self) -> Token:
        """A fresh token and its expiry (seconds since the epoch)."""
        try:
            from aws_msk_iam_sasl_signer import (  # type: ignore[import-untyped]
                MSKAuthTokenProvider,
            )

            quiet_botocore()
            provider = _provider(self._credentials())
            token, expiry_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
                self._region, provider
            )
        except (ConfigError, KafkaFatal):
            raise
        except Exception as exc:  # botocore's errors, ValueError of the signer
            raise KafkaFatal(
                f"AWS MSK IAM: cannot sign a token for region {self._region!r}: "
                f"{redact(exc, self._secrets)}"
            ) from None
        return str(token), int(expiry_ms) / 1000.0

    def oauth_cb(self, _oauthbearer_config: str | None) -> Token:
        """librdkafka's OAUTHBEARER refresh callback. A failure is logged here (one
        line) and raised, which librdkafka reports as an authentication error."""
        primed, self._primed = self._primed, None
        if primed is not None and primed[1] - time.time() > 60:
            return primed
        try:
            return self.token()
        except (ConfigError, KafkaFatal) as exc:
            log.error("%s", exc)
            raise

    def _credentials(self) -> Any:
        import botocore.credentials
        import botocore.session

        if self._given is not None:
            g = self._given
            return botocore.credentials.Credentials(
                g.access_key_id, g.secret_access_key, g.session_token
            )
        if self._chain is None:
            self._chain = botocore.session.Session().get_credentials()
        if self._chain is None:
            raise ConfigError(
                f"sasl.mechanism={MECHANISM}: no AWS credentials found; set aws.access.key.id "
                "and aws.secret.access.key, or configure the default AWS credential chain "
                "(AWS_ACCESS_KEY_ID..., ~/.aws, an instance or container role)"
            )
        return self._chain


def _provider(credentials: Any) -> Any:
    """A botocore CredentialProvider handing out ``credentials`` (the signer takes only
    a provider, a profile, a role or the default chain)."""
    import botocore.credentials

    class _Fixed(botocore.credentials.CredentialProvider):
        METHOD = "streamsend"

        def load(self) -> Any:
            return credentials

    return _Fixed()


def oauthbearer_config(settings: CommonSettings, conf: Mapping[str, Any]) -> dict[str, Any]:
    """The librdkafka properties that replace ``sasl.mechanism=AWS_MSK_IAM`` in ``conf``:
    OAUTHBEARER with our token callback, and SASL_SSL unless the user chose a SASL
    protocol (MSK offers IAM only over TLS; SASL_PLAINTEXT is for tests)."""
    protocol = str(conf.get("security.protocol", "SASL_SSL")).upper()
    if protocol not in _SASL_PROTOCOLS:
        raise ConfigError(
            f"sasl.mechanism={MECHANISM} needs security.protocol=SASL_SSL (MSK's IAM "
            f"listener), not {protocol}"
        )
    source = TokenSource(settings)
    callback: Callable[[str | None], Token] = source.oauth_cb
    return {"security.protocol": protocol, "sasl.mechanism": "OAUTHBEARER", "oauth_cb": callback}
