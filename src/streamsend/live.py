"""Live progress in a terminal (``rich``), and the summary line of a bounded run.

When stderr is a terminal (and neither ``--quiet`` nor ``log.format=json``), upload and
download show a live display on stderr: one row per file in progress (name, bytes done of
its size, rate, time left; a spinner where the size is unknown) and an overall row (files
done, bytes, rate). Log lines still appear, printed above the display through the same
console. Anywhere else :class:`Display` does nothing and the logs are as they always were.

The services call :meth:`Display.start`, :meth:`Display.advance` and
:meth:`Display.finish` from their loop; the display is redrawn from the loop too (at most
:data:`REFRESH_SECONDS` apart), never by a thread of its own. Names come from the topic:
they are shown as plain text with their control characters escaped, never parsed as
markup.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
)
from rich.text import Text

from streamsend.textsafe import escape_controls

REFRESH_SECONDS = 0.1  # at most ~10 redraws a second
MIB = 2**20


def rate_text(bytes_per_second: float | None) -> str:
    """``12.3 MiB/s``; ``-`` while unknown."""
    if bytes_per_second is None:
        return "-"
    if bytes_per_second < MIB:
        return f"{bytes_per_second / 1024:.1f} KiB/s"
    return f"{bytes_per_second / MIB:.1f} MiB/s"


def eta_text(remaining_bytes: float | None, bytes_per_second: float | None) -> str:
    """Time left at this rate: ``0:42``, ``1:02:03``; ``-:--`` while unknown."""
    if remaining_bytes is None or not bytes_per_second:
        return "-:--"
    seconds = round(max(remaining_bytes, 0) / bytes_per_second)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def summary_text(
    files: int, size: int, seconds: float, failures: Mapping[str, int], ok: str = "all verified"
) -> str:
    """The last line of a bounded run: ``3 files, 12.0 MiB in 4.1 s (2.9 MiB/s), all
    verified``, or the failures by kind (``; 1 failed, 2 abandoned``) instead of ``ok``."""
    rate = size / MIB / seconds if seconds > 0 else 0.0
    head = (
        f"{files} file{'' if files == 1 else 's'}, {size / MIB:.1f} MiB in {seconds:.1f} s "
        f"({rate:.1f} MiB/s)"
    )
    bad = [f"{count} {kind}" for kind, count in failures.items() if count]
    return f"{head}; {', '.join(bad)}" if bad else f"{head}, {ok}"


def interactive(quiet: bool, log_format: str, stream: IO[str] | None = None) -> bool:
    """Whether a live display is shown: on a terminal, unless quiet or JSON logs."""
    stream = sys.stderr if stream is None else stream
    return not quiet and log_format != "json" and stream.isatty()


class Display:
    """The display of a run that shows none (not a terminal, ``--quiet``, JSON logs, or
    a library caller): every call does nothing."""

    def start(self, key: str, name: str, size: int | None) -> None:
        """A file ``name`` (untrusted) of ``size`` bytes (None: unknown) is in progress."""

    def advance(self, key: str, done: int) -> None:
        """``done`` bytes of file ``key`` are sent or staged."""

    def finish(self, key: str, size: int, ok: bool) -> None:
        """File ``key`` is done: sent or delivered (``ok``), or not."""

    def tick(self) -> None:
        """Redraw, if the last redraw is old enough (called from the loop)."""

    def open(self) -> None:
        """Start showing (the ``with`` block starts)."""

    def close(self) -> None:
        """Stop showing, leaving the last frame (the ``with`` block ends)."""

    def __enter__(self) -> Display:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def for_terminal(quiet: bool, log_format: str) -> Display:
        """A :class:`LiveDisplay` on stderr when :func:`interactive`, else a no-op."""
        return LiveDisplay(Console(stderr=True)) if interactive(quiet, log_format) else Display()


class _NameColumn(ProgressColumn):
    """The task's name as plain text: never markup, control characters escaped."""

    def render(self, task: Task) -> Text:
        return Text(task.fields.get("name", ""), no_wrap=True, overflow="ellipsis")


class _RateColumn(ProgressColumn):
    """A file's recent rate; the overall row's average since the start."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if task.fields.get("average"):
            elapsed = task.elapsed
            speed = task.completed / elapsed if elapsed else None
        return Text(rate_text(speed), style="progress.data.speed")


class _EtaColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.fields.get("average"):
            return Text("")
        return Text(eta_text(task.remaining, task.speed), style="progress.remaining")


class _ConsoleHandler(logging.Handler):
    """Log lines printed through the display's console, above the live rows."""

    def __init__(self, console: Console, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Plain Text: never markup. The formatters have escaped untrusted text.
            self.console.print(Text(self.format(record)), soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


class LiveDisplay(Display):
    """Rows of files in progress and an overall row, drawn by ``rich`` on ``console``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(finished_text=" "),
            _NameColumn(),
            BarColumn(bar_width=24),
            DownloadColumn(binary_units=True),
            _RateColumn(),
            _EtaColumn(),
            console=console,
            auto_refresh=False,  # redrawn from the loop (tick), no thread of ours
            redirect_stdout=False,
            redirect_stderr=False,
            speed_estimate_period=10.0,
        )
        self.tasks: dict[str, TaskID] = {}
        self.files = self.failed = self.bytes = 0
        self.overall = self.progress.add_task(
            "", total=None, name=self._overall_name(), average=True
        )
        self._last = 0.0
        self._handlers: list[logging.Handler] = []

    def _overall_name(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"overall: {self.files} file{'' if self.files == 1 else 's'} done{failed}"

    def start(self, key: str, name: str, size: int | None) -> None:
        if key in self.tasks:
            return
        self.tasks[key] = self.progress.add_task("", total=size, name=escape_controls(name))
        self.tick()

    def advance(self, key: str, done: int) -> None:
        task = self.tasks.get(key)
        if task is not None:
            self.progress.update(task, completed=done)
        self.tick()

    def finish(self, key: str, size: int, ok: bool) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            self.progress.remove_task(task)
        if ok:
            self.files += 1
            self.bytes += size
        else:
            self.failed += 1
        self.progress.update(self.overall, completed=self.bytes, name=self._overall_name())
        self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= REFRESH_SECONDS:
            self._last = now
            self.progress.refresh()

    def open(self) -> None:
        # Log lines go through the console, so they print above the live rows.
        root = logging.getLogger()
        self._handlers = root.handlers[:]
        root.handlers = [
            _ConsoleHandler(self.console, h.formatter) if _to_stderr(h) else h
            for h in self._handlers
        ]
        self.progress.start()

    def close(self) -> None:
        self.progress.refresh()
        self.progress.stop()
        logging.getLogger().handlers = self._handlers


def _to_stderr(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (
        sys.stderr,
        sys.__stderr__,
    )
