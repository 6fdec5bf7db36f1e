"""The live display's formatting pieces (streamsend.live): rate, time left, the summary
line, when a display is shown, and names rendered as plain escaped text."""

from __future__ import annotations

import io
import logging
import sys

from rich.console import Console

from streamsend.live import (
    Display,
    LiveDisplay,
    eta_text,
    interactive,
    rate_text,
    summary_text,
)


def test_rate_text() -> None:
    assert rate_text(None) == "-"
    assert rate_text(512) == "0.5 KiB/s"
    assert rate_text(3 * 2**20) == "3.0 MiB/s"
    assert rate_text(1.25 * 2**30) == "1280.0 MiB/s"


def test_eta_text() -> None:
    assert eta_text(None, 100) == "-:--"
    assert eta_text(100, None) == "-:--"
    assert eta_text(100, 0) == "-:--"
    assert eta_text(0, 10) == "0:00"
    assert eta_text(420, 10) == "0:42"
    assert eta_text(3723 * 10, 10) == "1:02:03"


def test_summary_text() -> None:
    ok = summary_text(3, 12 * 2**20, 4.0, {"rejected": 0})
    assert ok == "3 files, 12.0 MiB in 4.0 s (3.0 MiB/s), all verified"
    one = summary_text(1, 0, 0.0, {}, "all acknowledged")
    assert one == "1 file, 0.0 MiB in 0.0 s (0.0 MiB/s), all acknowledged"
    bad = summary_text(2, 2**20, 2.0, {"failed": 1, "abandoned": 0, "incomplete": 2})
    assert bad == "2 files, 1.0 MiB in 2.0 s (0.5 MiB/s); 1 failed, 2 incomplete"


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_interactive_only_on_a_terminal_without_quiet_or_json() -> None:
    assert interactive(False, "text", _Stream(True))
    assert not interactive(True, "text", _Stream(True))
    assert not interactive(False, "json", _Stream(True))
    assert not interactive(False, "text", _Stream(False))
    assert type(Display.for_terminal(True, "text")) is Display  # the no-op


def test_names_are_plain_escaped_text_and_logs_go_through_the_console() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    display = LiveDisplay(console)
    logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
    try:
        with display:
            display.start("t1", "up1/[bold]x[/bold]\x1b]0;title\x07.bin", 2000)
            display.advance("t1", 1000)
            logging.getLogger("streamsend.test").warning("a line above the display")
            display._last = 0.0
            display.tick()
            display.finish("t1", 2000, ok=True)
            display.finish("t2", 10, ok=False)
    finally:
        logging.getLogger().handlers.pop()
    shown = out.getvalue()
    assert "up1/[bold]x[/bold]\\x1b]0;title\\x07.bin" in shown, shown
    assert "\x1b]0;" not in shown and "\x07" not in shown, shown
    assert "a line above the display" in shown, shown
    assert "overall: 1 file done, 1 failed" in shown, shown
