"""The one exception tree of Streamsend.

Every error a user can meet is a subclass of :class:`StreamsendError`. Each class
carries the process exit code it maps to; the CLI (``cli.py``) is the single place
that turns an exception into a one-line message on stderr and that exit code.

    StreamsendError                    exit 1   anything we raise on purpose
    ├── ConfigError                    exit 2   bad property, value, file or flag
    ├── UsageError                     exit 2   bad command line outside the config model
    ├── EnvironmentProblem             exit 3   missing java/mvn, unwritable dir, lock held
    │   └── LockHeld                   exit 3   another uploader owns input.dir
    ├── LocalKafkaError                exit 4   local cluster failed to start/stop
    ├── KafkaFatal                     exit 5   broker refuses us for good (auth, unknown host)
    ├── AccessRefused                  exit 5   S3 refuses our credentials or access
    ├── TransferIncomplete             exit 6   --once / --idle.exit.ms ended with failures
    ├── Interrupted                    exit 130 stopped by a signal before work began
    └── ProtocolError                  (never reaches the CLI: bad messages are skipped)
        └── UnsupportedVersion

Messages are written for the user who reads them: they name the property, file or
process concerned and, where one exists, the fix.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0
    ERROR = 1
    CONFIG = 2
    ENVIRONMENT = 3
    LOCAL_KAFKA = 4
    KAFKA_FATAL = 5
    INCOMPLETE = 6
    INTERRUPTED = 130


class StreamsendError(Exception):
    """Base of every error Streamsend raises on purpose."""

    exit_status: ExitStatus = ExitStatus.ERROR


class ConfigError(StreamsendError):
    """A property, value, configuration file or flag is invalid."""

    exit_status = ExitStatus.CONFIG


class UsageError(StreamsendError):
    """The command line is malformed."""

    exit_status = ExitStatus.CONFIG


class EnvironmentProblem(StreamsendError):
    """Something on this machine stops us: a missing tool, a directory we cannot use."""

    exit_status = ExitStatus.ENVIRONMENT


class LockHeld(EnvironmentProblem):
    """Another process holds the lock on a directory."""


class LocalKafkaError(StreamsendError):
    """The local Kafka cluster could not be started, stopped or inspected."""

    exit_status = ExitStatus.LOCAL_KAFKA


class KafkaFatal(StreamsendError):
    """Kafka refused us in a way retrying cannot fix (authentication, unknown host)."""

    exit_status = ExitStatus.KAFKA_FATAL


class AccessRefused(StreamsendError):
    """Another service we deliver to (S3) refuses our credentials or our access: the
    same exit status as Kafka refusing them."""

    exit_status = ExitStatus.KAFKA_FATAL


class TransferIncomplete(StreamsendError):
    """A bounded run (--once, --idle.exit.ms) ended with files not delivered."""

    exit_status = ExitStatus.INCOMPLETE


class Interrupted(StreamsendError):
    """Stopped by SIGTERM/SIGINT before there was anything to finish cleanly."""

    exit_status = ExitStatus.INTERRUPTED


class ProtocolError(StreamsendError):
    """A message on the topic does not follow the Streamsend wire protocol."""


class UnsupportedVersion(ProtocolError):
    """A message carries a protocol version this downloader does not know."""
