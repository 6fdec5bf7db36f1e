"""Is the cluster usable? Ask it the way a client would: create a topic and produce to it.

"Process started" or even "port open" says little: a KRaft broker accepts connections
before its controller quorum has elected a leader or before it is unfenced. A successful
produce after a topic creation is the promise `up` makes to its caller.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import javaproperties
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # typed here; confluent_kafka.admin re-exports it

from streamsend.errors import LocalKafkaError

READY_TOPIC = "_streamsend_ready"

# librdkafka logs every refused connection at error level while the broker starts; route
# its log through a silent logger instead of our stderr.
_quiet = logging.getLogger("streamsend.localkafka.readiness.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class NotReady(Exception):
    """One readiness attempt failed; the message says where it stopped."""


def ports_open(ports: list[int]) -> bool:
    for port in ports:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                pass
        except OSError:
            return False
    return True


class ReadinessProbe:
    """Clients kept across attempts so each retry does not pay a new bootstrap."""

    def __init__(self, bootstrap_servers: str, node_ids: list[int]) -> None:
        common: dict[str, str | int] = {
            "bootstrap.servers": bootstrap_servers,
            "socket.connection.setup.timeout.ms": 5000,
            "reconnect.backoff.max.ms": 500,
        }
        self._node_ids = set(node_ids)
        self._admin = AdminClient(dict(common), logger=_quiet)
        self._producer = Producer(
            {**common, "logger": _quiet, "acks": "all", "message.timeout.ms": 10000}
        )

    def attempt(self, timeout: float) -> None:
        """Raise NotReady unless every broker is registered and accepts a produce."""
        timeout = max(timeout, 1.0)
        try:
            metadata = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise NotReady(f"metadata request failed: {exc}") from exc
        missing = self._node_ids - set(metadata.brokers)
        if missing:
            raise NotReady(f"brokers {sorted(missing)} not yet registered with the controller")
        if READY_TOPIC not in metadata.topics:
            self._create_topic(timeout)
        self._produce(timeout)

    def _create_topic(self, timeout: float) -> None:
        # One partition per broker and one replica each: the produce below then reaches
        # every node, and a node that is down cannot be hidden by a replica elsewhere.
        topic = NewTopic(
            READY_TOPIC,
            num_partitions=len(self._node_ids),
            replication_factor=1,
            config={"min.insync.replicas": "1", "retention.ms": "3600000"},
        )
        future = self._admin.create_topics([topic], operation_timeout=timeout)[READY_TOPIC]
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            raise NotReady(f"creating topic {READY_TOPIC} failed: {exc}") from exc

    def _produce(self, timeout: float) -> None:
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        for partition in range(len(self._node_ids)):
            self._producer.produce(
                READY_TOPIC, value=b"ready", partition=partition, on_delivery=on_delivery
            )
        remaining = self._producer.flush(timeout)
        if remaining:
            raise NotReady(f"{remaining} test message(s) to {READY_TOPIC} still undelivered")
        if errors:
            raise NotReady(f"producing to {READY_TOPIC} failed: {errors[0]}")


def wait_until_ready(
    bootstrap_servers: str,
    node_ids: list[int],
    ports: list[int],
    timeout: float,
    check_alive: Callable[[], None],
) -> None:
    """Block until a round trip succeeds; ``check_alive`` raises if a node died meanwhile.

    Raises TimeoutError naming what was waited for and the last reason it was not ready.
    """
    deadline = time.monotonic() + timeout
    last = "the client ports to accept connections"
    # Clients are created only once the ports listen: librdkafka would otherwise spend its
    # first seconds in connection backoff.
    while not ports_open(ports):
        check_alive()
        if time.monotonic() >= deadline:
            raise TimeoutError(last)
        time.sleep(0.25)
    probe = ReadinessProbe(bootstrap_servers, node_ids)
    while True:
        check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(last)
        try:
            probe.attempt(min(remaining, 15.0))
            return
        except NotReady as exc:
            last = str(exc)
        time.sleep(0.3)


def check_client_files(files: Sequence[Path], timeout: float) -> None:
    """Log in with each client property file of a secure cluster and read metadata.

    The files are a promise (``--config FILE`` just works): a listener, certificate or
    SASL user that does not work is a failed ``up``, not a surprise for the user later.
    Raises LocalKafkaError naming the file and librdkafka's reason.
    """
    for path in files:
        with path.open(encoding="utf-8") as fp:
            conf: dict[str, Any] = dict(javaproperties.load(fp))
        errors: list[str] = []
        conf.update(
            {
                "logger": _quiet,
                "error_cb": lambda err, seen=errors: seen.append(err.str()),
                "socket.connection.setup.timeout.ms": 5000,
                "reconnect.backoff.max.ms": 500,
            }
        )
        admin = AdminClient(conf)
        try:
            admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            reason = errors[-1] if errors else str(exc)
            raise LocalKafkaError(f"the secure cluster refuses {path}: {reason}") from None
