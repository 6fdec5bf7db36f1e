"""Showing untrusted text (names and reasons from the topic) without letting it act.

A path, uploader name or abort reason comes from whoever can write to the topic. Written
raw into a log or a terminal, a newline starts a forged log line and an escape sequence
drives the terminal. Log such values with ``%r`` (Python's repr escapes them); the log
formatter escapes whatever still reaches it, as a second line of defence.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import Any

# Control, format (bidi overrides...), line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def escape_controls(text: str) -> str:
    """``text`` with every control or invisible formatting character escaped (``\\n``,
    ``\\x1b``, ``\\u202e``); printable text, any script, is left as it is."""
    if text.isprintable():
        return text
    return "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )


def json_line(value: Any) -> str:
    """``value`` as one line of JSON that is safe to print: every control or invisible
    formatting character is a ``\\uXXXX`` escape (JSON escapes C0 controls itself; C1
    controls, bidi overrides and separators are escaped here) while other text, any
    script, stays readable. Parsing the line gives back exactly ``value``."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if text.isprintable():
        return text
    # Only string contents can hold such characters; JSON's own syntax is printable.
    return "".join(
        json.dumps(ch)[1:-1] if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch
        for ch in text
    )


def listing(items: Sequence[str], shown: int = 20) -> str:
    """``items`` joined by commas, at most ``shown`` of them and a count of the rest: an
    error naming ten thousand files stays one readable line."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
