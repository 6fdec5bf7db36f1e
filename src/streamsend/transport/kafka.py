"""The Kafka implementation of the transport: client configuration, connectivity,
topic administration. The producer and consumer adapters are in ``kafka_clients.py``.

Only ``transport/kafka*.py`` import confluent_kafka for the services; the services and
the pure core never see a Kafka type.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from confluent_kafka import KafkaError, KafkaException

# The admin package re-exports these without listing them in __all__.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from streamsend.config.kafka_properties import applies_to
from streamsend.config.loader import is_secret
from streamsend.config.settings import CommonSettings
from streamsend.errors import ConfigError, Interrupted, KafkaFatal
from streamsend.logs import event
from streamsend.transport import msk_iam
from streamsend.transport.base import TopicSpec

log = logging.getLogger(__name__)
kafka_log = logging.getLogger("streamsend.librdkafka")

# librdkafka log facilities that repeat, every few seconds, what ConnectionWatch reports
# once ("unreachable" / "reachable again"): during an outage they would flood the log.
# OIDC logs each failed token request (every 10 s) that error_cb reports too.
_CHURN_FACILITIES = frozenset({"FAIL", "GETPID", "REQTMOUT", "ERROR", "FETCHERR", "OIDC"})


class _DropConnectionChurn(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if kafka_log.isEnabledFor(logging.DEBUG):
            return True
        args = record.args
        facility = args[0] if isinstance(args, tuple) and args else ""
        return facility not in _CHURN_FACILITIES


kafka_log.addFilter(_DropConnectionChurn())

ClientKind = Literal["producer", "consumer", "admin"]
C = TypeVar("C")

# Errors that retrying cannot fix, with what they mean: the operator has to change the
# configuration (or the broker's). The text of some says more: see fatal_cause().
_NOT_AUTHORIZED = "not authorized (the broker's ACLs do not allow this principal)"
_FATAL_CODES = {
    KafkaError._AUTHENTICATION: "authentication failed",
    KafkaError.SASL_AUTHENTICATION_FAILED: "SASL authentication failed",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: _NOT_AUTHORIZED,
    KafkaError.GROUP_AUTHORIZATION_FAILED: _NOT_AUTHORIZED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: _NOT_AUTHORIZED,
    KafkaError._SSL: "TLS failed (check the ssl.* properties)",
    KafkaError._INVALID_ARG: "invalid client configuration",
}
# Resolution failures are fatal only before we ever reached the cluster: a host name
# that never resolved is a typo; one that stops resolving later is a network outage.
_UNREACHABLE_CODES = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE}

# What librdkafka 2.x says (in error_cb) when TLS or SASL refuses us, seen on Kafka 4.1:
#   _AUTHENTICATION "SASL authentication error: Authentication failed during
#       authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512" (wrong
#       password or unknown user), "... Authentication failed: Invalid username or
#       password" (PLAIN);
#   _SSL "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed:
#       broker certificate could not be verified ..." (the broker's certificate is not
#       signed by ssl.ca.location), sometimes as _TRANSPORT "error:0A000086:SSL
#       routines::certificate verify failed (... in state SSL_HANDSHAKE)";
#   _TRANSPORT "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad
#       certificate: SSL alert number 42 (... in state APIVERSION_QUERY)" (no client
#       certificate for a listener that requires one; with TLS 1.3 the broker's alert
#       arrives after the handshake), "... alert certificate unknown: SSL alert number 46"
#       (a client certificate from a CA the broker does not trust);
#   _TRANSPORT "SSL handshake failed: Disconnected: SSL connection closed by peer:
#       connecting to a PLAINTEXT broker listener? (... in state SSL_HANDSHAKE)".
# A broker that is down says "Connection refused" instead: none of these is an outage.
_SERVER_UNTRUSTED = re.compile(r"certificate verify failed|broker certificate could not be")
_CLIENT_CERT_REFUSED = re.compile(
    r"alert (bad certificate|certificate (unknown|required|expired|revoked|unsupported)"
    r"|unsupported certificate|unknown ca|access denied)"
)
_HANDSHAKE_CUT = re.compile(r"in state SSL_HANDSHAKE|SSL handshake failed")
# An OIDC token endpoint (sasl.oauthbearer.method=oidc) that does not answer is an outage
# like a broker that is down, not a refusal: librdkafka asks again every 10 s. Its curl
# error, seen with librdkafka 2.16: _AUTHENTICATION "Failed to acquire SASL OAUTHBEARER
# token: Failed to connect to 127.0.0.1:1 after 0 ms: Could not connect to server". A
# refused client (wrong secret: HTTP 401) shows the endpoint's answer instead, e.g.
# "Failed to acquire SASL OAUTHBEARER token: {"error": "invalid_client"}": fatal.
_TOKEN_ENDPOINT_DOWN = re.compile(
    r"OAUTHBEARER token: (Failed to connect|Could not connect|Could not resolve|"
    r"Connection timed out|Operation timed out|Timeout was reached)"
)
# A handshake cut short is fatal only when it keeps happening before we ever got through:
# once, it may be a broker going down at that moment.
_HANDSHAKE_CUTS_FATAL = 3


def fatal_cause(code: int, text: str) -> str | None:
    """What a librdkafka error means for the user, when retrying cannot fix it."""
    if _SERVER_UNTRUSTED.search(text):
        return (
            "the broker's TLS certificate is not trusted (ssl.ca.location must hold the CA "
            "that signed it, and the certificate must name the host in bootstrap.servers)"
        )
    if _CLIENT_CERT_REFUSED.search(text):
        return (
            "the broker requires a client certificate it trusts (ssl.certificate.location "
            "and ssl.key.location, signed by a CA the broker trusts)"
        )
    if _TOKEN_ENDPOINT_DOWN.search(text):
        return None
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED) and (
        "SASL" in text
    ):
        if "OAUTHBEARER" in text:
            return (
                "SASL OAUTHBEARER authentication failed (check sasl.mechanism, the "
                "sasl.oauthbearer.* properties or, for AWS_MSK_IAM, the aws.* properties "
                "and that the listener offers it)"
            )
        return "SASL authentication failed (check sasl.mechanism, sasl.username and sasl.password)"
    return _FATAL_CODES.get(code)


@dataclass
class ConnectionWatch:
    """Turns librdkafka's error callback into one log line when Kafka becomes
    unreachable and one when it is back, and remembers fatal errors (authentication,
    untrusted certificates: see :func:`fatal_cause`)."""

    name: str
    ever_connected: bool = False
    unreachable_since: float | None = None
    fatal: str | None = None  # the one-line reason, once a fatal error was seen
    handshake_cuts: int = 0

    def error_cb(self, err: KafkaError) -> None:
        if self.fatal is not None:
            return  # the "all brokers down" that follows a refusal is no news
        code, text = err.code(), err.str()
        cause = fatal_cause(code, text)
        if cause is None and code == KafkaError._RESOLVE and not self.ever_connected:
            cause = "the host in bootstrap.servers does not resolve"
        if (
            cause is None
            and code == KafkaError._TRANSPORT
            and not self.ever_connected
            and _HANDSHAKE_CUT.search(text)
        ):
            self.handshake_cuts += 1
            if self.handshake_cuts < _HANDSHAKE_CUTS_FATAL:
                log.debug("%s: Kafka client reports %s", self.name, text)
                return  # not "unreachable" yet: the next cut probably makes it fatal
            cause = (
                "the TLS handshake fails (security.protocol does not match the "
                "listener in bootstrap.servers?)"
            )
        if cause is not None:
            self.fatal = f"{cause}: {text}"
            return
        if code == KafkaError._TRANSPORT:
            self.handshake_cuts = 0  # consecutive cuts only: this one is something else
        if (code in _UNREACHABLE_CODES and not self.handshake_cuts) or (
            _TOKEN_ENDPOINT_DOWN.search(text)
        ):
            self.unreachable(text)
            return
        log.debug("%s: Kafka client reports %s", self.name, text)

    def unreachable(self, detail: str) -> None:
        """Call when a request failed for want of a broker; logs only the first time."""
        if self.unreachable_since is None and self.fatal is None:
            self.unreachable_since = time.monotonic()
            log.warning(
                "%s: Kafka is unreachable (%s); retrying until it is back",
                self.name,
                detail,
                extra=event("kafka.unreachable", client=self.name, cause=detail),
            )

    def reached(self) -> None:
        """Call when a request succeeded."""
        self.ever_connected = True
        self.handshake_cuts = 0
        if self.unreachable_since is not None:
            gone = time.monotonic() - self.unreachable_since
            log.warning(
                "%s: Kafka is reachable again after %.0f s",
                self.name,
                gone,
                extra=event("kafka.reachable", client=self.name, duration_s=round(gone, 3)),
            )
            self.unreachable_since = None

    def raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise KafkaFatal(f"Kafka refused the connection: {self.fatal}")


def new_client(factory: Callable[[dict[str, Any]], C], conf: dict[str, Any]) -> C:
    """``factory(conf)`` (a confluent-kafka client class); a configuration librdkafka
    rejects (a key file that does not parse, an unknown mechanism) is a ConfigError whose
    one line names librdkafka's reason, with every secret value of ``conf`` blanked."""
    try:
        return factory(conf)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        reason = error.str() if isinstance(error, KafkaError) else str(exc)
        for key, value in conf.items():
            if isinstance(value, str) and value and is_secret(key):
                reason = reason.replace(value, "(hidden)")
        raise ConfigError(
            f"the Kafka client rejects its configuration: {' '.join(reason.split())}"
        ) from None


def client_config(
    settings: CommonSettings,
    kind: ClientKind,
    defaults: Mapping[str, Any],
    watch: ConnectionWatch | None = None,
) -> dict[str, Any]:
    """Our defaults, overridden by the user's librdkafka properties that apply to
    this kind of client, then the bootstrap servers; ``sasl.mechanism=AWS_MSK_IAM``
    becomes OAUTHBEARER with a token callback (``msk_iam.py``)."""
    conf: dict[str, Any] = dict(defaults)
    for key, value in settings.kafka.items():
        if kind == "admin":
            if applies_to(key, "producer") and applies_to(key, "consumer"):
                conf[key] = value
        elif applies_to(key, kind):
            conf[key] = value
    conf["bootstrap.servers"] = settings.bootstrap_servers
    if msk_iam.wanted(conf):
        conf.pop("sasl.mechanisms", None)
        conf.update(msk_iam.oauthbearer_config(settings, conf))
    # librdkafka's own log lines go through Python logging, not raw to stderr.
    conf.setdefault("logger", kafka_log)
    if watch is not None:
        conf["error_cb"] = watch.error_cb
    return conf


def _result(future: Any, what: str, watch: ConnectionWatch | None) -> Any:
    try:
        value = future.result()
    except KafkaException as exc:
        if watch is not None:
            watch.raise_if_fatal()
        raise KafkaFatal(f"{what} failed: {exc.args[0].str() if exc.args else exc}") from exc
    if watch is not None:
        watch.reached()
    return value


class Admin:
    """The few admin operations Streamsend needs."""

    def __init__(self, settings: CommonSettings, watch: ConnectionWatch) -> None:
        self._watch = watch
        self._client = new_client(AdminClient, client_config(settings, "admin", {}, watch))

    def wait_for_cluster(
        self, stopping: Callable[[], bool] = lambda: False, attempt_timeout: float = 5.0
    ) -> int:
        """Block until the cluster answers (for ever while it is merely unreachable, or
        until ``stopping()``); returns the number of brokers. Fatal errors (unknown host,
        failed authentication) raise KafkaFatal."""
        failing_since: float | None = None
        while True:
            self._watch.raise_if_fatal()
            if stopping():
                raise Interrupted("stopped while waiting for Kafka")
            try:
                # Short slices: a refusal (wrong password, untrusted certificate) arrives
                # in error_cb within milliseconds and ends the wait at the next slice.
                md = self._client.list_topics(timeout=min(1.0, attempt_timeout))
            except KafkaException as exc:
                self._client.poll(0)  # serves error_cb, where fatal errors are seen
                self._watch.raise_if_fatal()
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= attempt_timeout:
                    self._watch.unreachable(exc.args[0].str())
                continue
            self._watch.raise_if_fatal()
            self._watch.reached()
            return len(md.brokers)

    def topic_exists(self, topic: str) -> bool:
        # Not list_topics(topic=...): a metadata request naming a topic makes a broker
        # with auto.create.topics.enable=true (Kafka's default) create it, with the
        # broker's defaults instead of ours (a state topic that is never compacted).
        md = self._client.list_topics(timeout=30)
        t = md.topics.get(topic)
        return t is not None and t.error is None

    def ensure_topic(self, topic: str, spec: TopicSpec) -> bool:
        """Create the topic when missing; returns True when we created it."""
        if self.topic_exists(topic):
            return False
        new = NewTopic(
            topic,
            num_partitions=spec.partitions,
            replication_factor=spec.replication,
            config=dict(spec.config),
        )
        futures = self._client.create_topics([new])
        try:
            futures[topic].result()
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False  # another uploader won the race
            raise KafkaFatal(f"cannot create topic {topic!r}: {exc.args[0].str()}") from exc
        # Creation is asynchronous on the brokers: wait until metadata shows it.
        deadline = time.monotonic() + 30
        while not self.topic_exists(topic):
            if time.monotonic() > deadline:
                raise KafkaFatal(f"topic {topic!r} was created but did not appear within 30 s")
            time.sleep(0.2)
        log.info(
            "created topic %s (%d partitions, replication factor %d)",
            topic,
            spec.partitions,
            spec.replication,
        )
        return True

    def partition_count(self, topic: str, wait: float = 30.0) -> int:
        """The topic's partition count. Each metadata request may go to another broker,
        and right after a topic is created one whose metadata lags does not list it yet
        (seen on a 3-node cluster): wait up to ``wait`` seconds for it."""
        deadline = time.monotonic() + wait
        while True:
            md = self._client.list_topics(timeout=30)
            found = md.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return len(found.partitions)
            if time.monotonic() > deadline:
                raise KafkaFatal(f"topic {topic!r} is not in the cluster's metadata")
            time.sleep(0.2)

    def topic_config(self, topic: str, names: Sequence[str]) -> dict[str, str]:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        future = self._client.describe_configs([resource])[resource]
        entries = _result(future, f"reading the configuration of topic {topic!r}", self._watch)
        return {name: str(entries[name].value) for name in names if name in entries}

    def message_limits(self, topic: str) -> tuple[int, int]:
        """(broker message.max.bytes, topic max.message.bytes)."""
        md = self._client.list_topics(timeout=30)
        broker_id = str(min(md.brokers))
        broker_res = ConfigResource(ConfigResource.Type.BROKER, broker_id)
        topic_res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        results = self._client.describe_configs([broker_res, topic_res])
        values = {}
        for res, future in results.items():
            entries = _result(future, f"reading the configuration of {res}", self._watch)
            values[res.restype] = entries
        broker = int(values[ConfigResource.Type.BROKER]["message.max.bytes"].value)
        topic_limit = int(values[ConfigResource.Type.TOPIC]["max.message.bytes"].value)
        return broker, topic_limit
