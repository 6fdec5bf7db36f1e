"""Names of librdkafka's client configuration properties, with their client scope.

The table below is transcribed from librdkafka's ``CONFIGURATION.md`` (the "Global configuration
properties" and "Topic configuration properties" tables, "Property" and "C/P" columns) for
librdkafka 2.16.0, the version bundled with confluent-kafka 2.16 (``confluent_kafka.libversion()``),
and checked against the tables printed by that library's ``rd_kafka_conf_properties_show()``
(the generator of ``CONFIGURATION.md``), which is where the 2.16 additions ``max.poll.records``,
``share.acknowledgement.mode`` and ``sasl.oauthbearer.sub.claim.name`` come from.
Topic-level properties are included because librdkafka accepts them in the global client
configuration and applies them to the default topic configuration. Aliases (``bootstrap.servers``,
``linger.ms``, ``acks``, ...) are listed alongside the names they alias.

Left out on purpose are the properties whose type is "see dedicated API": callbacks and opaque
pointers that can only be set through the C API (``opaque``, ``default_topic_conf``,
``interceptors``, ``*_cb``, ``ssl_key``, ``ssl_certificate``, ``ssl_ca``,
``ssl_engine_callback_data``, ``ssl.certificate.verify_cb``, ``msg_order_cmp``). Everything that
can be given as a string, for example in a properties file, is included.

Scopes follow the C/P column: ``"*"`` applies to producers and consumers, ``"P"`` to producers
only, ``"C"`` to consumers only.

To refresh after a librdkafka upgrade, compare this table with ``CONFIGURATION.md`` at the matching
librdkafka tag (https://github.com/confluentinc/librdkafka/blob/vX.Y.Z/CONFIGURATION.md), or with
the output of ``rd_kafka_conf_properties_show()`` from the bundled library, which prints the same
tables. Add or remove names and keep the dict sorted; every name must be accepted by
``confluent_kafka.Producer({name: value})`` without "No such configuration property".
"""

from typing import Final, Literal

__all__ = ["LIBRDKAFKA_PROPERTIES", "Scope", "applies_to", "is_librdkafka_property"]

Scope = Literal["*", "P", "C"]

LIBRDKAFKA_PROPERTIES: Final[dict[str, Scope]] = {
    "acks": "P",
    "allow.auto.create.topics": "*",
    "api.version.fallback.ms": "*",
    "api.version.request": "*",
    "api.version.request.timeout.ms": "*",
    "auto.commit.enable": "C",
    "auto.commit.interval.ms": "C",
    "auto.offset.reset": "C",
    "batch.num.messages": "P",
    "batch.size": "P",
    "bootstrap.servers": "*",
    "broker.address.family": "*",
    "broker.address.ttl": "*",
    "broker.version.fallback": "*",
    "builtin.features": "*",
    "check.crcs": "C",
    "client.dns.lookup": "*",
    "client.id": "*",
    "client.rack": "*",
    "compression.codec": "P",
    "compression.level": "P",
    "compression.type": "P",
    "connections.max.idle.ms": "*",
    "consume.callback.max.messages": "C",
    "coordinator.query.interval.ms": "C",
    "debug": "*",
    "delivery.report.only.error": "P",
    "delivery.timeout.ms": "P",
    "enable.auto.commit": "C",
    "enable.auto.offset.store": "C",
    "enable.gapless.guarantee": "P",
    "enable.idempotence": "P",
    "enable.metrics.push": "*",
    "enable.partition.eof": "C",
    "enable.random.seed": "*",
    "enable.sasl.oauthbearer.unsecure.jwt": "*",
    "enable.ssl.certificate.verification": "*",
    "enabled_events": "*",
    "fetch.error.backoff.ms": "C",
    "fetch.max.bytes": "C",
    "fetch.message.max.bytes": "C",
    "fetch.min.bytes": "C",
    "fetch.queue.backoff.ms": "C",
    "fetch.wait.max.ms": "C",
    "group.id": "C",
    "group.instance.id": "C",
    "group.protocol": "C",
    "group.protocol.type": "C",
    "group.remote.assignor": "C",
    "heartbeat.interval.ms": "C",
    "https.ca.location": "*",
    "https.ca.pem": "*",
    "internal.termination.signal": "*",
    "isolation.level": "C",
    "linger.ms": "P",
    "log.connection.close": "*",
    "log.queue": "*",
    "log.thread.name": "*",
    "log_level": "*",
    "max.in.flight": "*",
    "max.in.flight.requests.per.connection": "*",
    "max.partition.fetch.bytes": "C",
    "max.poll.interval.ms": "C",
    "max.poll.records": "C",
    "message.copy.max.bytes": "*",
    "message.max.bytes": "*",
    "message.send.max.retries": "P",
    "message.timeout.ms": "P",
    "metadata.broker.list": "*",
    "metadata.max.age.ms": "*",
    "metadata.recovery.rebootstrap.trigger.ms": "*",
    "metadata.recovery.strategy": "*",
    "offset.store.method": "C",
    "offset.store.path": "C",
    "offset.store.sync.interval.ms": "C",
    "partition.assignment.strategy": "C",
    "partitioner": "P",
    "plugin.library.paths": "*",
    "produce.offset.report": "P",
    "queue.buffering.backpressure.threshold": "P",
    "queue.buffering.max.kbytes": "P",
    "queue.buffering.max.messages": "P",
    "queue.buffering.max.ms": "P",
    "queued.max.messages.kbytes": "C",
    "queued.min.messages": "C",
    "queuing.strategy": "P",
    "receive.message.max.bytes": "*",
    "reconnect.backoff.jitter.ms": "*",
    "reconnect.backoff.max.ms": "*",
    "reconnect.backoff.ms": "*",
    "request.required.acks": "P",
    "request.timeout.ms": "P",
    "retries": "P",
    "retry.backoff.max.ms": "*",
    "retry.backoff.ms": "*",
    "sasl.kerberos.keytab": "*",
    "sasl.kerberos.kinit.cmd": "*",
    "sasl.kerberos.min.time.before.relogin": "*",
    "sasl.kerberos.principal": "*",
    "sasl.kerberos.service.name": "*",
    "sasl.mechanism": "*",
    "sasl.mechanisms": "*",
    "sasl.oauthbearer.assertion.algorithm": "*",
    "sasl.oauthbearer.assertion.claim.aud": "*",
    "sasl.oauthbearer.assertion.claim.exp.seconds": "*",
    "sasl.oauthbearer.assertion.claim.iss": "*",
    "sasl.oauthbearer.assertion.claim.jti.include": "*",
    "sasl.oauthbearer.assertion.claim.nbf.seconds": "*",
    "sasl.oauthbearer.assertion.claim.sub": "*",
    "sasl.oauthbearer.assertion.file": "*",
    "sasl.oauthbearer.assertion.jwt.template.file": "*",
    "sasl.oauthbearer.assertion.private.key.file": "*",
    "sasl.oauthbearer.assertion.private.key.passphrase": "*",
    "sasl.oauthbearer.assertion.private.key.pem": "*",
    "sasl.oauthbearer.client.credentials.client.id": "*",
    "sasl.oauthbearer.client.credentials.client.secret": "*",
    "sasl.oauthbearer.client.id": "*",
    "sasl.oauthbearer.client.secret": "*",
    "sasl.oauthbearer.config": "*",
    "sasl.oauthbearer.extensions": "*",
    "sasl.oauthbearer.grant.type": "*",
    "sasl.oauthbearer.metadata.authentication.type": "*",
    "sasl.oauthbearer.method": "*",
    "sasl.oauthbearer.scope": "*",
    "sasl.oauthbearer.sub.claim.name": "*",
    "sasl.oauthbearer.token.endpoint.url": "*",
    "sasl.password": "*",
    "sasl.username": "*",
    "security.protocol": "*",
    "session.timeout.ms": "C",
    "share.acknowledgement.mode": "C",
    "socket.blocking.max.ms": "*",
    "socket.connection.setup.timeout.ms": "*",
    "socket.keepalive.enable": "*",
    "socket.max.fails": "*",
    "socket.nagle.disable": "*",
    "socket.receive.buffer.bytes": "*",
    "socket.send.buffer.bytes": "*",
    "socket.timeout.ms": "*",
    "ssl.ca.certificate.stores": "*",
    "ssl.ca.location": "*",
    "ssl.ca.pem": "*",
    "ssl.certificate.location": "*",
    "ssl.certificate.pem": "*",
    "ssl.cipher.suites": "*",
    "ssl.crl.location": "*",
    "ssl.curves.list": "*",
    "ssl.endpoint.identification.algorithm": "*",
    "ssl.engine.id": "*",
    "ssl.engine.location": "*",
    "ssl.key.location": "*",
    "ssl.key.password": "*",
    "ssl.key.pem": "*",
    "ssl.keystore.location": "*",
    "ssl.keystore.password": "*",
    "ssl.providers": "*",
    "ssl.sigalgs.list": "*",
    "statistics.interval.ms": "*",
    "sticky.partitioning.linger.ms": "P",
    "topic.blacklist": "*",
    "topic.metadata.propagation.max.ms": "*",
    "topic.metadata.refresh.fast.cnt": "*",
    "topic.metadata.refresh.fast.interval.ms": "*",
    "topic.metadata.refresh.interval.ms": "*",
    "topic.metadata.refresh.sparse": "*",
    "transaction.timeout.ms": "P",
    "transactional.id": "P",
}

_CLIENT_SCOPE: Final[dict[str, Scope]] = {"producer": "P", "consumer": "C"}


def is_librdkafka_property(name: str) -> bool:
    """Return True if ``name`` is a librdkafka configuration property (exact, case-sensitive)."""
    return name in LIBRDKAFKA_PROPERTIES


def applies_to(name: str, client: Literal["producer", "consumer"]) -> bool:
    """Return True if property ``name`` is used by a ``client`` of the given kind.

    Properties with scope ``"*"`` apply to both kinds; unknown names apply to neither.
    """
    scope = LIBRDKAFKA_PROPERTIES.get(name)
    if scope is None:
        return False
    return scope == "*" or scope == _CLIENT_SCOPE[client]
