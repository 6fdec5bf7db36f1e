"""Fake AWS credentials for the MSK IAM tests, and an environment in which botocore
finds nothing of this machine's and calls nothing: no metadata service, no ~/.aws, and
a proxy on a closed local port for any HTTP it would try."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

REGION = "eu-west-1"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEKEYzz9"
SESSION = "FwoGZXIvYXdzEFAKESESSIONTOKENzzzz+abc/def=="
ENV_KEY_ID = "AKIAENVIRONMENT00001"
ENV_SECRET = "environment/secret+FAKE0000000000000000"
ENV_SESSION = "EnvironmentFAKESessionToken0000"

# Every token for REGION begins with these characters (the base64url of a fixed URL
# prefix, cut at a multiple of 3 bytes): finding them finds a token.
TOKEN_PREFIX = base64.urlsafe_b64encode(
    f"https://kafka.{REGION}.amazonaws.com/?Action=kafka-cluster%3AConnect&".encode()[:57]
).decode()

_CHAIN_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def offline_aws_environment(tmp_path: Path) -> dict[str, str]:
    """Variables that keep botocore to itself (for os.environ or a subprocess)."""
    return {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }


def isolate_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process: no credentials of the machine's, nothing botocore could call."""
    for var in _CHAIN_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    for var, value in offline_aws_environment(tmp_path).items():
        monkeypatch.setenv(var, value)


def decode(token: str) -> tuple[str, dict[str, str]]:
    """The presigned URL inside a token (base64url without padding) and its query."""
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token), "base64url alphabet, no '=' padding"
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query, strict_parsing=True).items()}
    return url, query
