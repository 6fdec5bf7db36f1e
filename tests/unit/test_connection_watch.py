"""ConnectionWatch: which librdkafka errors end a run (exit 5) and which are an outage.

The strings are what librdkafka 2.x reported against the real Kafka 4.1 broker of
``kafka up --secure`` (tests/integration/test_security_transport.py runs the same cases
end to end); here the classification is pinned without a broker.
"""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from streamsend.errors import KafkaFatal
from streamsend.transport.kafka import ConnectionWatch, kafka_log

SCRAM_WRONG = (
    "sasl_ssl://127.0.0.1:47133/bootstrap: SASL authentication error: Authentication failed "
    "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 "
    "(after 310ms in state AUTH_REQ)"
)
# What librdkafka reported for AWS_MSK_IAM against a listener without OAUTHBEARER.
OAUTHBEARER_REFUSED = (
    "SASL OAUTHBEARER mechanism handshake failed: Broker: Request not valid in current SASL "
    "state: broker's supported mechanisms:  (after 0ms in state AUTH_HANDSHAKE)"
)
# OIDC client credentials (sasl.oauthbearer.method=oidc): the token endpoint refuses the
# client secret (HTTP 401; librdkafka quotes the endpoint's answer), or does not answer.
OIDC_WRONG_SECRET = 'Failed to acquire SASL OAUTHBEARER token: {"error": "invalid_client"}'
OIDC_ENDPOINT_DOWN = (
    "Failed to acquire SASL OAUTHBEARER token: Failed to connect to 127.0.0.1:1 after 0 ms: "
    "Could not connect to server"
)
PLAIN_WRONG = (
    "sasl_ssl://127.0.0.1:47133/bootstrap: SASL authentication error: Authentication failed: "
    "Invalid username or password (after 301ms in state AUTH_REQ)"
)
UNTRUSTED_SSL = (
    "ssl://127.0.0.1:38993/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
    "certificate verify failed: broker certificate could not be verified, verify that "
    "ssl.ca.location is correctly configured or root CA certificates are installed (install "
    "ca-certificates package) (after 2ms in state SSL_HANDSHAKE)"
)
UNTRUSTED_TRANSPORT = (
    "sasl_ssl://127.0.0.1:47133/bootstrap: error:0A000086:SSL routines::certificate verify "
    "failed (after 2ms in state SSL_HANDSHAKE)"
)
NO_CLIENT_CERT = (
    "ssl://127.0.0.1:38993/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls "
    "alert bad certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)"
)
FOREIGN_CLIENT_CERT = (
    "ssl://127.0.0.1:38993/bootstrap: Receive failed: error:0A000416:SSL routines::ssl/tls "
    "alert certificate unknown: SSL alert number 46 (after 0ms in state APIVERSION_QUERY)"
)
TLS_TO_PLAINTEXT = (
    "ssl://127.0.0.1:54477/bootstrap: SSL handshake failed: Disconnected: SSL connection "
    "closed by peer: connecting to a PLAINTEXT broker listener? (after 1ms in state "
    "SSL_HANDSHAKE)"
)
REFUSED = (
    "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused "
    "(after 0ms in state CONNECT)"
)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def fatal_line(watch: ConnectionWatch) -> str:
    with pytest.raises(KafkaFatal) as caught:
        watch.raise_if_fatal()
    line = str(caught.value)
    assert "\n" not in line
    return line


@pytest.mark.parametrize(
    ("code", "text", "cause"),
    [
        (KafkaError._AUTHENTICATION, SCRAM_WRONG, "SASL authentication failed"),
        (KafkaError._AUTHENTICATION, PLAIN_WRONG, "SASL authentication failed"),
        (KafkaError._AUTHENTICATION, OAUTHBEARER_REFUSED, "SASL OAUTHBEARER authentication"),
        (KafkaError._AUTHENTICATION, OIDC_WRONG_SECRET, "SASL OAUTHBEARER authentication"),
        (KafkaError._SSL, UNTRUSTED_SSL, "the broker's TLS certificate is not trusted"),
        (KafkaError._TRANSPORT, UNTRUSTED_TRANSPORT, "the broker's TLS certificate is not trusted"),
        (KafkaError._TRANSPORT, NO_CLIENT_CERT, "the broker requires a client certificate"),
        (KafkaError._TRANSPORT, FOREIGN_CLIENT_CERT, "the broker requires a client certificate"),
        (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            "Broker: Topic authorization failed",
            "not authorized",
        ),
    ],
)
def test_refusals_are_fatal_at_once_with_their_cause(code: int, text: str, cause: str) -> None:
    watch = ConnectionWatch("uploader")
    watch.error_cb(KafkaError(code, text))
    line = fatal_line(watch)
    assert line.startswith(f"Kafka refused the connection: {cause}")
    assert text in line  # librdkafka's own words, for whoever digs further


def test_the_all_brokers_down_after_a_refusal_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = ConnectionWatch("uploader")
    watch.error_cb(KafkaError(KafkaError._AUTHENTICATION, SCRAM_WRONG))
    watch.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    watch.unreachable("Failed to get metadata")
    assert watch.unreachable_since is None
    assert warnings(caplog) == []
    assert "SCRAM-SHA-512" in fatal_line(watch)  # the first cause is the one reported


def test_a_broker_that_is_down_is_an_outage_not_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    watch = ConnectionWatch("uploader")
    for _ in range(20):
        watch.error_cb(KafkaError(KafkaError._TRANSPORT, REFUSED))
        watch.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    watch.raise_if_fatal()
    assert watch.unreachable_since is not None
    logged = warnings(caplog)
    assert len(logged) == 1 and "unreachable" in logged[0]


def test_an_oidc_token_endpoint_that_is_down_is_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = ConnectionWatch("downloader")
    for _ in range(5):  # librdkafka asks the endpoint again every 10 s
        watch.error_cb(KafkaError(KafkaError._AUTHENTICATION, OIDC_ENDPOINT_DOWN))
    watch.raise_if_fatal()
    logged = warnings(caplog)
    assert len(logged) == 1 and OIDC_ENDPOINT_DOWN in logged[0]


def test_librdkafkas_oidc_log_line_is_kept_for_debug() -> None:
    """librdkafka logs each failed token request (facility OIDC) besides reporting it to
    error_cb: below DEBUG only the one line of ConnectionWatch remains."""
    line = 'Failed to retrieve OIDC token from "http://127.0.0.1:1/token": ... (401)'
    record = kafka_log.makeRecord(
        kafka_log.name, logging.ERROR, __file__, 0, "%s [%s] %s", ("OIDC", "p-1", line), None
    )
    level = kafka_log.level
    try:
        kafka_log.setLevel(logging.INFO)
        assert not kafka_log.filter(record)
        kafka_log.setLevel(logging.DEBUG)
        assert kafka_log.filter(record)
    finally:
        kafka_log.setLevel(level)


def test_a_repeated_cut_handshake_before_any_success_is_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = ConnectionWatch("downloader")
    watch.error_cb(KafkaError(KafkaError._TRANSPORT, TLS_TO_PLAINTEXT))
    watch.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "0/2 brokers are down"))
    watch.error_cb(KafkaError(KafkaError._TRANSPORT, TLS_TO_PLAINTEXT))
    watch.raise_if_fatal()  # twice may be a broker going down mid-handshake
    watch.error_cb(KafkaError(KafkaError._TRANSPORT, TLS_TO_PLAINTEXT))
    assert "security.protocol" in fatal_line(watch)
    assert warnings(caplog) == []


def test_a_cut_handshake_after_success_or_between_refusals_is_an_outage() -> None:
    watch = ConnectionWatch("uploader")
    watch.reached()
    for _ in range(10):
        watch.error_cb(KafkaError(KafkaError._TRANSPORT, TLS_TO_PLAINTEXT))
    watch.raise_if_fatal()
    assert watch.unreachable_since is not None

    fresh = ConnectionWatch("uploader")
    for _ in range(10):  # a broker restarting: cuts and refused connections alternate
        fresh.error_cb(KafkaError(KafkaError._TRANSPORT, TLS_TO_PLAINTEXT))
        fresh.error_cb(KafkaError(KafkaError._TRANSPORT, REFUSED))
    fresh.raise_if_fatal()
    assert fresh.unreachable_since is not None


def test_an_unresolvable_host_is_fatal_only_before_the_first_success() -> None:
    watch = ConnectionWatch("uploader")
    watch.error_cb(
        KafkaError(KafkaError._RESOLVE, "kafka.invalid:9092/bootstrap: Failed to resolve")
    )
    assert "does not resolve" in fatal_line(watch)
    later = ConnectionWatch("uploader")
    later.reached()
    later.error_cb(KafkaError(KafkaError._RESOLVE, "kafka.example:9092/1: Failed to resolve"))
    later.raise_if_fatal()
