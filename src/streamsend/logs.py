"""Log lines for people and for collectors: ``log.format=text|json``, and event fields.

A log call that reports something an operator counts or alerts on (a file sent,
delivered, rejected; a pause; Kafka gone) passes its facts as fields,
``log.info("sent %r", path, extra=event("file.sent", path=path, bytes=n))``: the text
format shows the message as it always did, the JSON format adds every field as a key.
docs/operations.md lists the events and their fields.

Untrusted text (paths, uploader names, reasons from the topic) is escaped in both
formats: the text formatter escapes control characters in the message, the JSON
formatter writes one line through :func:`~streamsend.textsafe.json_line`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streamsend import __version__
from streamsend.textsafe import escape_controls, json_line

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra=`` of a log call reporting event ``name``; fields that are None (not
    known) are left out."""
    return {"event": name, **{k: v for k, v in fields.items() if v is not None}}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The event fields a log call passed with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class EscapingFormatter(logging.Formatter):
    """Escapes control characters in every message: one event is one line, whatever
    untrusted text (a path, a reason from the topic) slipped into it unescaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, then the event's fields; ``exc`` holds a traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json_line(doc)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log.format``."""
    if log_format == "json":
        return JsonFormatter()
    return EscapingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def security_mode(kafka: Mapping[str, str]) -> dict[str, str]:
    """How the clients authenticate and encrypt, from the librdkafka properties:
    ``security.protocol`` and, with SASL, ``sasl.mechanism``. Never a secret."""
    mechanism = (kafka.get("sasl.mechanism") or kafka.get("sasl.mechanisms") or "").upper()
    default = "SASL_SSL" if mechanism == "AWS_MSK_IAM" else "PLAINTEXT"
    protocol = (kafka.get("security.protocol") or default).upper()
    mode = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        mode["sasl_mechanism"] = mechanism or "GSSAPI"  # librdkafka's default
    return mode


def describe_security(mode: Mapping[str, str]) -> str:
    """``SASL_SSL (SCRAM-SHA-512)``, ``SSL`` or ``PLAINTEXT``."""
    mechanism = mode.get("sasl_mechanism")
    protocol = mode["security_protocol"]
    return f"{protocol} ({mechanism})" if mechanism else protocol


def log_banner(
    logger: logging.Logger,
    role: str,
    what: str,
    kafka: Mapping[str, str],
    encryption: str | None,
    **fields: Any,
) -> None:
    """The start-up line of ``role`` (event ``{role}.started``): the version, ``what``
    (topic, sizes, names), the security mode and encryption (``encryption`` says how it
    is on, None: off). Never a secret: security is only the protocol and mechanism."""
    security = security_mode(kafka)
    logger.info(
        "streamsend %s %s%s, security %s, encryption %s",
        __version__,
        role,
        what,
        describe_security(security),
        f"on ({encryption})" if encryption else "off",
        extra=event(
            f"{role}.started",
            version=__version__,
            encryption=encryption is not None,
            **fields,
            **security,
        ),
    )
