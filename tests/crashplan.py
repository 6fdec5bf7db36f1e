"""The crash plan shared by the crash-injection tests of the uploader and downloader.

A service under test calls the plan before each durable step (through its ``faults``
hook and the in-memory broker's). The plan counts the steps and, at the chosen one,
raises :class:`Crash`: a BaseException, so no handler in the service catches it, as
nothing catches a SIGKILL.
"""

from __future__ import annotations


class Crash(BaseException):
    """The process died here."""


class CrashPlan:
    """Counts durable steps; raises :class:`Crash` at step ``crash_at`` (1-based; None:
    never). ``seen`` lists the steps taken, the crashing one included."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.seen: list[str] = []

    def __call__(self, step: str) -> None:
        self.seen.append(step)
        if len(self.seen) == self.crash_at:
            raise Crash(f"step {self.crash_at}: {step}")
