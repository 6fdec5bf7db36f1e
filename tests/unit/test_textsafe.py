"""Showing untrusted text: escaping that keeps one event on one line, and bounded lists."""

from __future__ import annotations

from streamsend.textsafe import escape_controls, listing


def test_control_and_invisible_characters_are_escaped() -> None:
    forged = "a.txt\n2026-11-26 INFO delivered '/etc/shadow'\r\x1b[2K\u202etxt.exe\u2028"
    shown = escape_controls(forged)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert "\u202e" not in shown and "\u2028" not in shown
    assert shown == (
        "a.txt\\n2026-11-26 INFO delivered '/etc/shadow'\\r\\x1b[2K\\u202etxt.exe\\u2028"
    )


def test_printable_text_of_any_script_is_left_alone() -> None:
    for text in ("résumé-日本.txt", "spaces are fine", "Ωμέγα/данные"):
        assert escape_controls(text) == text


def test_listing_counts_what_it_does_not_show() -> None:
    assert listing(["'a'", "'b'"]) == "'a', 'b'"
    names = [f"'f{i}'" for i in range(25)]
    assert listing(names) == ", ".join(names[:20]) + " and 5 more"
    assert listing(names, shown=2) == "'f0', 'f1' and 23 more"
    assert listing([]) == ""
