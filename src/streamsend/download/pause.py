"""Consumption paused while the downloader waits (disk full, destination down) or does a
long delivery (a multipart upload to S3).

The consumer is still polled, which keeps the member in its group (librdkafka leaves the
group when ``poll`` is not called for ``max.poll.interval.ms``). A record the client had
fetched before the pause may still come out of its queue: it is not handled now but read
again later, its partition rewound to the lowest such offset of the whole pause (several
may come out, and the last seek must not win).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamsend.transport.base import Consumer, TopicPartition


class Pause:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.active = False
        self._rewind: dict[TopicPartition, int] = {}

    def begin(self) -> None:
        if not self.active:
            self.consumer.pause()
            self.active = True

    def poll(self, seconds: float, stop: Callable[[], bool]) -> bool:
        """Stay paused (polling) for ``seconds``, 0 for a single poll; False once
        ``stop()`` says to stop."""
        self.begin()
        deadline = time.monotonic() + seconds
        while not stop():
            extra = self.consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
            if extra is not None:
                where = (extra.topic, extra.partition)
                self._rewind[where] = min(self._rewind.get(where, extra.offset), extra.offset)
                self.consumer.seek(where, self._rewind[where])
                # A partition assigned during the pause (a rebalance in this poll) was
                # not paused with the others.
                self.consumer.pause()
            if time.monotonic() >= deadline:
                return True
        return False

    def end(self) -> None:
        if self.active:
            self.consumer.resume()
            self.active = False
