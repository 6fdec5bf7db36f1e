"""``streamsend receive``: the downloader, bounded by the manifests of ``streamsend send``.

It reads the topic from its beginning under a consumer group of its own (a fresh id per
run, so every run sees every manifest still on the topic, whatever earlier runs into the
same output.dir committed) and stops as soon as at least one manifest was seen, every file
of every manifest seen is delivered and verified (now, or by an earlier run into the same
output.dir: its ledger remembers it), and nothing more arrived for ``QUIET_SECONDS``, which
is how it knows it has read the partitions to their end. After ``timeout`` it stops and
names what is missing.
"""

from __future__ import annotations

import logging
import time
import uuid

from streamsend.config.settings import DownloaderSettings
from streamsend.download.reassembly import Transfer
from streamsend.download.service import Downloader, DownloadStats
from streamsend.errors import TransferIncomplete
from streamsend.textsafe import listing
from streamsend.transport.base import Transport
from streamsend.wire.protocol import Manifest

log = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
DEFAULT_TIMEOUT_SECONDS = 300.0


class Receiver(Downloader):
    def __init__(
        self,
        settings: DownloaderSettings,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(settings, transport)
        self.timeout = timeout
        self.sends: dict[str, Manifest] = {}
        self._deadline = time.monotonic() + timeout
        self.timed_out = False
        self.delivered: set[str] = set()  # transfers delivered and verified by this run
        self.earlier: set[str] = set()  # finished before this run (the ledger)
        self.rejected: set[str] = set()
        self.summary = ""

    def _recover(self) -> None:
        super()._recover()
        self.earlier = set(self.done)

    def _deliver(self, batch: list[tuple[Transfer, tuple[str, ...]]]) -> None:
        placed = [t.transfer for t, _ in batch]
        try:
            super()._deliver(batch)
        finally:
            left = {t.transfer for t, _ in batch}  # not placed yet (a full disk)
            self.delivered.update(x for x in placed if x not in left and x not in self.rejected)

    def _reject(self, t: Transfer, reason: str) -> None:
        self.rejected.add(t.transfer)
        super()._reject(t, reason)

    def _consumer_overrides(self) -> dict[str, object]:
        overrides = super()._consumer_overrides()
        overrides.pop("group.instance.id", None)
        if "group.id" in overrides:  # not the user's own
            overrides["group.id"] = f"streamsend-receive-{uuid.uuid4().hex}"
        return overrides

    def _manifest(self, manifest: Manifest) -> None:
        if manifest.transfer not in self.sends:
            log.info(
                "send %s from %r lists %d file(s)",
                manifest.transfer,
                manifest.uploader,
                len(manifest.files),
            )
        self.sends[manifest.transfer] = manifest

    def missing(self) -> list[str]:
        """The files of the manifests seen that are not delivered and verified yet."""
        return [
            f"{m.uploader}/{f.path}"
            for m in self.sends.values()
            for f in m.files
            if f.transfer not in self.delivered and f.transfer not in self.earlier
        ]

    def _enough(self, assigned: bool, last_message: float) -> bool:
        now = time.monotonic()
        if now >= self._deadline:
            self.timed_out = True
            return True
        quiet = assigned and now - last_message >= QUIET_SECONDS
        return quiet and bool(self.sends) and not self._ready and not self.missing()

    def run(self) -> DownloadStats:
        started = time.monotonic()
        self._deadline = started + self.timeout
        stats = super().run()
        missing = self.missing()
        if not self.sends:
            raise TransferIncomplete(
                f"no send's manifest arrived on topic {self.settings.topic!r} within "
                f"{self.timeout:g} s (--timeout)"
            )
        if missing:
            raise TransferIncomplete(
                f"{len(missing)} file(s) not received within {self.timeout:g} s "
                f"(--timeout): {listing([repr(m) for m in missing])}"
            )
        files = sum(len(m.files) for m in self.sends.values())
        size = sum(f.size for m in self.sends.values() for f in m.files)
        took = time.monotonic() - started
        self.summary = (
            f"{files} files, {size / 2**20:.1f} MiB received in {took:.1f} s, all verified"
        )
        return stats
