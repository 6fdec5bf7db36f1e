"""SASL OAUTHBEARER with OIDC client credentials, as librdkafka does it, on the real broker
of ``kafka up --secure``: a token endpoint on 127.0.0.1 (in this test) grants unsigned
JWTs for one client id and secret; the uploader and downloader get their token from it
with nothing but librdkafka's ``sasl.oauthbearer.*`` properties and send files through
the SASL_SSL listener, whose (unsecured) validator accepts them. A wrong client secret
is one line and exit 5 within seconds; neither the secret nor a token shows in the
output at DEBUG with librdkafka's ``debug=all``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from harness import write_random
from security_support import VERBOSE, leaked, refusal_line, role_args, streamsend, variant
from streamsend import localkafka
from streamsend.errors import ExitStatus
from streamsend.localkafka import nodeconfig
from streamsend.verify import compare_trees

pytestmark = pytest.mark.kafka

CLIENT_ID = "streamsend-oidc-client"
WRONG_SECRET = "wrong-oidc-Secret-that-must-not-show"


def _b64url(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class TokenEndpoint:
    """The client-credentials grant of an OIDC provider, for one client: checks the id
    and secret (HTTP Basic, as librdkafka sends them, or the form), answers an unsigned
    JWT (``alg: none``) with ``sub``, ``iat`` and ``exp``, and remembers every token."""

    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    granted: list[str] = field(default_factory=list)
    refused: int = 0
    url: str = ""

    def credentials(self, headers: dict[str, str], form: dict[str, list[str]]) -> tuple[str, str]:
        basic = headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            return user, password
        return form.get("client_id", [""])[0], form.get("client_secret", [""])[0]

    def grant(self, headers: dict[str, str], body: str) -> tuple[int, dict[str, object]]:
        form = parse_qs(body)
        if form.get("grant_type") != ["client_credentials"]:
            return 400, {"error": "unsupported_grant_type"}
        if self.credentials(headers, form) != (CLIENT_ID, self.secret):
            self.refused += 1
            return 401, {"error": "invalid_client"}
        now = int(time.time())
        claims = {"sub": CLIENT_ID, "iat": now, "exp": now + 3600, "jti": secrets.token_hex(16)}
        token = f"{_b64url({'alg': 'none', 'typ': 'JWT'})}.{_b64url(claims)}."
        self.granted.append(token)
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": 3600}


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    state = TokenEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = state.grant(headers, body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # no access log on the test's stderr

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def oidc_config(
    cluster: localkafka.Cluster, endpoint: TokenEndpoint, secret: str, target: Path
) -> Path:
    """The SASL_SSL client file of the cluster, turned from PLAIN into OIDC."""
    return variant(
        cluster.client_file(nodeconfig.CLIENT_SASL_PLAIN_FILE),
        target,
        sasl_mechanism="OAUTHBEARER",
        sasl_username=None,
        sasl_password=None,
        sasl_oauthbearer_method="oidc",
        sasl_oauthbearer_client_id=CLIENT_ID,
        sasl_oauthbearer_client_secret=secret,
        sasl_oauthbearer_token_endpoint_url=endpoint.url,
    )


def test_oidc_round_trip_leaks_neither_secret_nor_token(
    secure_cluster: localkafka.Cluster, endpoint: TokenEndpoint, unique_topic: str, tmp_path: Path
) -> None:
    config = oidc_config(secure_cluster, endpoint, endpoint.secret, tmp_path / "oidc.properties")
    source, out = tmp_path / "in", tmp_path / "out"
    write_random(source / "small.bin", 1_000, seed=1)
    write_random(source / "nested" / "large.bin", 2 * 1024 * 1024 + 3, seed=2)
    up, _ = streamsend("upload", config, unique_topic, *role_args("upload", source), *VERBOSE)
    assert up.returncode == 0, up.stderr[-4000:]
    down, _ = streamsend("download", config, unique_topic, *role_args("download", out), *VERBOSE)
    assert down.returncode == 0, down.stderr[-4000:]
    assert compare_trees(source, out / "sec") == []
    assert endpoint.granted and endpoint.refused == 0
    output = up.stdout + up.stderr + down.stdout + down.stderr
    assert "streamsend.librdkafka" in output and "OAUTHBEARER" in output
    assert leaked(output, [endpoint.secret, *endpoint.granted]) == []


@pytest.mark.parametrize("role", ["upload", "download"])
def test_wrong_client_secret_is_one_line_exit_5(
    secure_cluster: localkafka.Cluster,
    endpoint: TokenEndpoint,
    role: str,
    unique_topic: str,
    tmp_path: Path,
) -> None:
    config = oidc_config(secure_cluster, endpoint, WRONG_SECRET, tmp_path / "wrong.properties")
    workdir = tmp_path / "dir"
    workdir.mkdir()
    (workdir / "a.txt").write_text("hello\n")
    done, seconds = streamsend(role, config, unique_topic, *role_args(role, workdir))
    line = refusal_line(done, seconds)
    assert line.startswith(
        "streamsend: error: Kafka refused the connection: SASL OAUTHBEARER authentication"
    ), line
    assert '{"error": "invalid_client"}' in line  # the endpoint's own answer
    assert endpoint.refused and not endpoint.granted
    loud, _ = streamsend(role, config, unique_topic, *role_args(role, workdir), *VERBOSE)
    assert loud.returncode == ExitStatus.KAFKA_FATAL, loud.stderr[-3000:]
    assert leaked(loud.stdout + loud.stderr, [WRONG_SECRET, endpoint.secret]) == []
