"""Where verified files go: the delivery step behind one small interface.

A delivery round (``service.py``) fsyncs the verified staged files, records them as
being delivered in the ledger, then hands each to the destination, and the ledger's
recovery rule is the same for every destination: a file being delivered whose ``.part``
is still in staging was not delivered yet and is handed over again; one whose ``.part``
is gone was. So a destination must take the ``.part`` out of staging only once the file
is durably where it goes, and handing the same file over twice must be harmless.

- :class:`LocalDestination`: rename into ``output.dir`` (``staging.py``);
- ``S3Destination`` (``s3.py``): upload as an object, then delete the ``.part``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from streamsend.download.reassembly import Transfer
from streamsend.download.staging import StagingArea

# Called by a destination while a delivery takes long (between the parts of an upload,
# between retries): keeps the consumer's group membership alive. Raises
# DeliveryStopped once the downloader is asked to stop.
KeepAlive = Callable[[], None]


class DestinationUnavailable(Exception):
    """The destination cannot take files now (an outage, expired credentials): the
    delivery is retried later, with backoff, for ever; nothing is lost meanwhile."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class DeliveryStopped(DestinationUnavailable):
    """The downloader was asked to stop during a long delivery: it is finished by the
    next run (an interrupted multipart upload is resumed, never made visible)."""

    def __init__(self) -> None:
        super().__init__("stopping")


class Destination(Protocol):
    def describe(self) -> str:
        """Where files go, for the start-up line ("output.dir /data", "s3://b/p/")."""

    def check(self) -> None:
        """Start-up: raise a StreamsendError saying in one line why files cannot be
        delivered here."""

    def deliver(self, t: Transfer, parts: tuple[str, ...], keep_alive: KeepAlive) -> str:
        """Deliver ``t`` (verified, fsynced, recorded as being delivered) at ``parts``
        under its uploader; returns where it went, for the log. Raises UnsafePath or
        VerificationFailed (the file is rejected), DiskFull or DestinationUnavailable
        (retried later)."""

    def finish_round(self) -> None:
        """Make the round's deliveries durable where that is done once per round."""

    def close(self) -> None:
        """Release connections (no durable step)."""


class LocalDestination:
    """Files renamed into place under ``output.dir``."""

    def __init__(self, staging: StagingArea) -> None:
        self.staging = staging

    def describe(self) -> str:
        return f"output.dir {str(self.staging.output_dir)!r}"

    def check(self) -> None:
        return None  # StagingArea already proved output.dir writable

    def deliver(self, t: Transfer, parts: tuple[str, ...], keep_alive: KeepAlive) -> str:
        return str(self.staging.place(t, parts))

    def finish_round(self) -> None:
        self.staging.sync_directories()

    def close(self) -> None:
        return None
