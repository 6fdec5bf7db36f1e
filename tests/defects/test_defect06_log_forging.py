"""Defect 6: text from the topic must not forge log lines or reach the terminal raw."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from defect_runs import Cli, content
from records import Transfer, abort, chunk, common_headers, key, new_transfer_id, produce

from harness import create_topic

pytestmark = pytest.mark.kafka

FAKE = "1999-11-26 12:00:00,000 INFO    streamsend: delivered '/etc/shadow'"


def test_untrusted_text_cannot_forge_log_lines(cli: Cli, tmp_path: Path) -> None:
    """Defect 6: an abort reason carrying a newline and a fake log line (plus CR and an ANSI
    escape), duplicated header names that contain a newline, and paths with CR and ESC:
    no stderr line of the downloader starts with the injected text, and no raw ESC or CR
    byte appears in its stderr. A genuine file sent after them is still delivered."""
    create_topic(cli.bootstrap, cli.topic)
    tid = new_transfer_id()
    reason = f"changed\n{FAKE}\rFAKE CR LINE\x1b[2K\x1b[31mred"
    forged_header = "streamsend.x\nFAKE HEADER LINE"
    dup = [*common_headers("chunk", new_transfer_id(), "up1", "dup.bin")]
    dup += [(forged_header, b"1"), (forged_header, b"2")]
    dup_path = [*common_headers("abort", new_transfer_id(), "up1", "p.bin")]
    dup_path += [("streamsend.path", b"other\nFAKE PATH LINE"), ("streamsend.reason", b"x")]
    records = [
        abort(tid, "up1", "forged.txt", reason),
        {"key": key("up1", "dup.bin"), "headers": dup, "value": b"data"},
        {"key": key("up1", "p.bin"), "headers": dup_path, "value": b""},
        chunk(new_transfer_id(), "up1", "cr\rFAKE CR PATH", 0, 0, 4, b"data"),
        chunk(new_transfer_id(), "up1", "esc\x1b[2Jclear", 0, 0, 4, b"data"),
        abort(new_transfer_id(), "up1", "esc\x1b]0;title\x07.txt", "bye"),
    ]
    genuine = Transfer("up1", "after.txt", b"still here\n")
    produce(cli.bootstrap, cli.topic, [*records, *genuine.records()])

    out = tmp_path / "out"
    down = cli.download(out)
    raw = down.raw_stderr
    # The log itself is shown escaped: printing it raw would drive this terminal too.
    shown = f"exit {down.returncode}\n" + "\n".join(repr(line) for line in raw.split(b"\n"))
    assert b"\x1b" not in raw, "raw ESC in stderr\n" + shown
    assert b"\r" not in raw, "raw CR in stderr\n" + shown
    injected = re.compile(rb"^(1999-11-26|FAKE )")
    forged = [line for line in raw.split(b"\n") if injected.match(line)]
    assert forged == [], f"forged lines {forged}\n" + shown
    assert content(out / "up1" / "after.txt") == genuine.data, shown
    assert "Traceback" not in down.stderr, shown


def test_untrusted_text_in_json_logs_is_one_parsable_line_each(cli: Cli, tmp_path: Path) -> None:
    """Defect 6 with log.format=json: paths with a newline, CR and ESC and an abort reason
    carrying a forged line give one JSON object per line, every line parses, no raw ESC
    or CR reaches stderr, and the forged text is in the JSON as visible escapes (a
    consumer parsing the line gets the exact path back)."""
    create_topic(cli.bootstrap, cli.topic)
    newline_path = f"nl\n{FAKE}.txt"
    esc_path = "esc\x1b[2Jclear"
    reason = f"changed\n{FAKE}\r\x1b[31mred"
    records = [
        abort(new_transfer_id(), "up1", "forged.txt", reason),
        chunk(new_transfer_id(), "up1", newline_path, 0, 0, 4, b"data"),
        chunk(new_transfer_id(), "up1", esc_path, 0, 0, 4, b"data"),
    ]
    genuine = Transfer("up1", "after.txt", b"still here\n")
    produce(cli.bootstrap, cli.topic, [*records, *genuine.records()])

    out = tmp_path / "out"
    down = cli.download(out, log_format="json")
    raw = down.raw_stderr
    shown = f"exit {down.returncode}\n" + "\n".join(repr(line) for line in raw.split(b"\n"))
    assert b"\x1b" not in raw and b"\r" not in raw, shown
    lines = raw.decode().split("\n")
    assert lines[-1] == "", shown
    objects = [json.loads(line) for line in lines[:-1]]  # every line parses
    assert all({"time", "level", "logger", "message"} <= o.keys() for o in objects), shown
    rejected = {o["path"]: o for o in objects if o.get("event") == "file.rejected"}
    assert set(rejected) >= {newline_path, esc_path}, shown
    assert rejected[newline_path]["uploader"] == "up1", shown
    (aborted,) = [o for o in objects if o.get("event") == "file.aborted"]
    assert aborted["cause"] == reason, shown
    # Visible as text: the escapes are in the line, not acted on.
    assert b"nl\\n1999-11-26" in raw and b"esc\\u001b[2Jclear" in raw, shown
    delivered = [o for o in objects if o.get("event") == "file.delivered"]
    assert [o["path"] for o in delivered] == ["after.txt"], shown
    assert content(out / "up1" / "after.txt") == genuine.data, shown
