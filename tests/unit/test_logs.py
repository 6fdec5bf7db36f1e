"""Logs: log.format=json (one parsable object per line, event fields as keys, untrusted
text escaped), the text format as it was, and the start-up banner of each side."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from test_download_service import TOPIC, produce, run, tid, whole
from test_upload_support import (
    CHUNK,
    UPLOADER,
    payload,
    run_once,
    uploader_settings,
    write,
)

from streamsend import __version__
from streamsend.errors import TransferIncomplete
from streamsend.logs import JsonFormatter, event, formatter, security_mode
from streamsend.transport.memory import MemoryBroker
from streamsend.wire import agekeys
from streamsend.wire.protocol import Abort, Chunk, End

FORGED = "evil\n2026-01-01 00:00:00,000 INFO    streamsend: delivered '/etc/shadow'\r\x1b[2J\u202e"
SECRETS = {"sasl.password": "hunter2-very-secret", "ssl.key.password": "pem-pass-secret"}
SECURE = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "alice",
    **SECRETS,
}


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def objects(self) -> list[dict[str, object]]:
        """Every line as JSON (fails on a line that does not parse)."""
        lines = self.text.split("\n")
        assert lines[-1] == "", "the output ends with a newline"
        return [json.loads(line) for line in lines[:-1]]

    def events(self, name: str) -> list[dict[str, object]]:
        return [o for o in self.objects() if o.get("event") == name]


def _capture(log_format: str) -> Iterator[Captured]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def json_logs() -> Iterator[Captured]:
    yield from _capture("json")


@pytest.fixture
def text_logs() -> Iterator[Captured]:
    yield from _capture("text")


def assert_terminal_safe(text: str) -> None:
    for bad in ("\x1b", "\r", "\u202e", "\x9b"):
        assert bad not in text, repr(bad)


# -- the JSON formatter ---------------------------------------------------------------


def test_a_json_line_has_time_level_logger_message_and_the_fields(json_logs: Captured) -> None:
    logging.getLogger("streamsend.x").warning(
        "sent %r", "a.bin", extra=event("file.sent", path="a.bin", bytes=3, cause=None)
    )
    (line,) = json_logs.objects()
    assert line["level"] == "WARNING" and line["logger"] == "streamsend.x"
    assert line["message"] == "sent 'a.bin'"
    assert (line["event"], line["path"], line["bytes"]) == ("file.sent", "a.bin", 3)
    assert "cause" not in line  # None: not known, left out
    stamp = str(line["time"])
    assert stamp.endswith("Z") and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert datetime.fromisoformat(stamp).utcoffset() is not None


def test_untrusted_text_is_one_json_line_with_its_escapes_visible(json_logs: Captured) -> None:
    """A path with a newline, CR, ESC, a C1 control and a bidi override: one line that
    parses back to exactly that path, with no raw control character in it."""
    path = FORGED + "\x9b31m"
    logging.getLogger("streamsend").error(
        "rejected %r", path, extra=event("file.rejected", path=path, uploader="u\x1b]0;t\x07")
    )
    (line,) = json_logs.objects()
    assert line["path"] == path and line["uploader"] == "u\x1b]0;t\x07"
    raw = json_logs.text
    assert_terminal_safe(raw)
    assert "\\u001b[2J" in raw and "\\n2026-01-01" in raw and "\\u202e" in raw


def test_a_traceback_stays_in_the_json_line(json_logs: Captured) -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("streamsend").exception("failed")
    (line,) = json_logs.objects()
    assert "ValueError: boom" in str(line["exc"])


def test_fields_never_replace_the_core_keys() -> None:
    record = logging.LogRecord("streamsend", logging.INFO, __file__, 1, "real", None, None)
    record.__dict__.update({"level": "FORGED", "time": "then", "outcome": "sent"})
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["message"], line["outcome"]) == ("INFO", "real", "sent")
    assert line["time"] != "then"


def test_the_text_format_is_as_before(text_logs: Captured) -> None:
    logging.getLogger("streamsend.upload.service").info(
        "sent %r (%d bytes)", FORGED, 3, extra=event("file.sent", path=FORGED, bytes=3)
    )
    (line,) = text_logs.text.splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    streamsend\.upload\.service: sent \".*\" "
        r"\(3 bytes\)",
        line,
    ), line
    assert_terminal_safe(text_logs.text)
    assert "file.sent" not in line  # the fields are for JSON; the text reads as it did


# -- events of the services ------------------------------------------------------------


def test_the_uploader_logs_each_file_as_an_event(tmp_path: Path, json_logs: Captured) -> None:
    write(tmp_path / "in/sub/a.bin", payload(2 * CHUNK + 5))
    write(tmp_path / "in/small.txt", b"hello")
    settings = uploader_settings(tmp_path / "in", **{"pack.file.max.bytes": "100"})
    run_once(settings, MemoryBroker())
    sent = {str(e["path"]): e for e in json_logs.events("file.sent")}
    assert set(sent) == {"sub/a.bin", "small.txt"}
    for path, size in (("sub/a.bin", 2 * CHUNK + 5), ("small.txt", 5)):
        e = sent[path]
        assert (e["uploader"], e["bytes"], e["outcome"]) == (UPLOADER, size, "sent")
        assert isinstance(e["duration_s"], float) and e["duration_s"] >= 0
        assert e["level"] == "INFO" and e["logger"] == "streamsend.upload.service"
    assert {e["path"] for e in json_logs.events("file.sending")} == {"sub/a.bin", "small.txt"}


def test_a_failed_file_is_an_event_with_its_cause(tmp_path: Path, json_logs: Captured) -> None:
    write(tmp_path / "in/a.bin", b"data")

    def faults(step: str) -> None:
        if step == "state":
            raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(TransferIncomplete):
        run_once(uploader_settings(tmp_path / "in"), MemoryBroker(), faults=faults)
    (failed,) = json_logs.events("file.failed")
    assert (failed["uploader"], failed["path"], failed["outcome"]) == (UPLOADER, "a.bin", "failed")
    assert failed["cause"] == "Input/output error" and failed["level"] == "ERROR"


def test_the_downloader_logs_deliveries_rejections_and_aborts(
    tmp_path: Path, json_logs: Captured
) -> None:
    broker = MemoryBroker()
    good = b"good bytes"
    wrong = hashlib.sha256(b"other").hexdigest()
    produce(
        broker,
        [
            *whole(tid(1), "dir/ok.bin", good),
            Chunk(tid(2), "up", "bad.bin", 0, 0, 4, b"abcd"),
            End(tid(2), "up", "bad.bin", 4, 1, wrong, 0, 0o644),
            Chunk(tid(3), "up", "torn.bin", 0, 0, 10, b"12345"),
            Abort(tid(3), "up", "torn.bin", FORGED),
            Chunk(tid(4), "up", FORGED, 0, 0, 10, b"12345"),
        ],
    )
    run(tmp_path / "out", broker)
    unsafe, rejected = sorted(json_logs.events("file.rejected"), key=lambda e: e["path"] != FORGED)
    assert (unsafe["path"], unsafe["outcome"]) == (FORGED, "rejected")
    assert str(unsafe["cause"]).startswith("unsafe path")
    (delivered,) = json_logs.events("file.delivered")
    assert (delivered["uploader"], delivered["path"], delivered["bytes"]) == (
        "up",
        "dir/ok.bin",
        10,
    )
    assert delivered["outcome"] == "delivered" and float(str(delivered["duration_s"])) >= 0
    assert delivered["sha256"] == hashlib.sha256(good).hexdigest()
    assert (rejected["path"], rejected["outcome"], rejected["bytes"]) == ("bad.bin", "rejected", 4)
    assert str(rejected["cause"]).startswith("SHA-256 mismatch")
    (aborted,) = json_logs.events("file.aborted")
    assert (aborted["path"], aborted["cause"]) == ("torn.bin", FORGED)
    assert aborted["outcome"] == "aborted"
    assert_terminal_safe(json_logs.text)


def test_a_refused_transfer_carries_its_cause(tmp_path: Path, json_logs: Captured) -> None:
    broker = MemoryBroker()
    produce(broker, [Chunk(tid(9), "up", "huge.bin", 0, 0, 1 << 49, b"x")])
    run(tmp_path / "out", broker)
    (refused,) = json_logs.events("file.refused")
    assert (refused["uploader"], refused["path"], refused["outcome"]) == (
        "up",
        "huge.bin",
        "refused",
    )
    assert refused["bytes"] == 1 << 49 and "exceeds" in str(refused["cause"])


# -- the start-up banner ---------------------------------------------------------------


def test_the_uploader_banner(tmp_path: Path, json_logs: Captured) -> None:
    recipient = agekeys.keygen(tmp_path / "id.txt")
    write(tmp_path / "in/a.bin", b"a")
    props = {**SECURE, "encryption.recipients": recipient}
    run_once(uploader_settings(tmp_path / "in", **props), MemoryBroker())
    (banner,) = json_logs.events("uploader.started")
    message = str(banner["message"])
    assert message.startswith(f"streamsend {__version__} uploader {UPLOADER!r}: topic {TOPIC} (")
    for part in (
        "partitions)",
        f"chunk size {CHUNK} bytes",
        "security SASL_SSL (SCRAM-SHA-512)",
        "encryption on (1 recipient(s))",
        "message size limit",
    ):
        assert part in message, part
    assert banner["version"] == __version__ and banner["uploader"] == UPLOADER
    assert banner["topic"] == TOPIC and int(str(banner["partitions"])) >= 1
    assert banner["chunk_bytes"] == CHUNK and banner["encryption"] is True
    assert banner["recipients"] == 1
    assert isinstance(banner["broker_message_max_bytes"], int)
    assert isinstance(banner["topic_max_message_bytes"], int)
    assert (banner["security_protocol"], banner["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    for secret in SECRETS.values():
        assert secret not in json_logs.text
    assert "alice" not in message


def test_the_uploader_banner_without_encryption(tmp_path: Path, text_logs: Captured) -> None:
    write(tmp_path / "in/a.bin", b"a")
    run_once(uploader_settings(tmp_path / "in"), MemoryBroker())
    (line,) = [line for line in text_logs.text.splitlines() if f"streamsend {__version__}" in line]
    assert "security PLAINTEXT" in line and line.endswith("encryption off")


def test_the_downloader_banner(tmp_path: Path, json_logs: Captured) -> None:
    identity = tmp_path / "id.txt"
    agekeys.keygen(identity)
    broker = MemoryBroker()
    produce(broker, whole(tid(1), "a.bin", b"a"))
    run(
        tmp_path / "out",
        broker,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password=SECRETS["sasl.password"],
        ssl_key_password=SECRETS["ssl.key.password"],
        encryption_identity_file=str(identity),
    )
    (banner,) = json_logs.events("downloader.started")
    message = str(banner["message"])
    assert message.startswith(f"streamsend {__version__} downloader: topic {TOPIC} (")
    assert "security SASL_SSL (SCRAM-SHA-512)" in message
    assert f"encryption on (identity file {identity})" in message
    assert str(banner["group_id"]).startswith("streamsend-downloader-")
    assert f"group id {banner['group_id']}" in message
    assert banner["partitions"] == banner["assigned"] and int(str(banner["partitions"])) >= 1
    for secret in SECRETS.values():
        assert secret not in json_logs.text
    assert identity.read_text().split()[-1] not in json_logs.text  # the secret key itself


def test_a_users_group_id_is_the_one_shown(tmp_path: Path, json_logs: Captured) -> None:
    broker = MemoryBroker()
    produce(broker, whole(tid(1), "a.bin", b"a"))
    run(tmp_path / "out", broker, group_id="my-group")
    (banner,) = json_logs.events("downloader.started")
    assert banner["group_id"] == "my-group" and banner["encryption"] is False


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        ({}, {"security_protocol": "PLAINTEXT"}),
        ({"security.protocol": "ssl"}, {"security_protocol": "SSL"}),
        (
            {"sasl.mechanism": "AWS_MSK_IAM"},
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"},
        ),
        (
            {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN"},
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
        ),
        (
            {"security.protocol": "SASL_SSL"},
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"},
        ),
    ],
)
def test_security_mode(kafka: dict[str, str], expected: dict[str, str]) -> None:
    assert security_mode(kafka) == expected


def test_the_final_error_line_is_json_too_under_log_format_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamsend import cli

    missing = tmp_path / "missing"
    argv = ["upload", "--bootstrap.servers", "127.0.0.1:1", "--topic", "t"]
    code = cli.main([*argv, "--input.dir", str(missing), "--log.format", "json"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and lines
    last = json.loads(lines[-1])
    assert last["event"] == "run.error" and last["exit_code"] == 3
    assert "is not a directory" in last["message"]
    assert all(json.loads(line) for line in lines)
    # Without log.format=json it stays the one plain line of every error.
    assert cli.main([*argv, "--input.dir", str(missing)]) == 3
    assert capsys.readouterr().err.strip().startswith("streamsend: error: input.dir")
