"""The thin command line: parse, dispatch, and turn errors into messages and exit codes.

This is the only module that prints an error for the user or picks an exit code.
Flags for ``upload`` and ``download`` are generated from the configuration model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamsend import __version__
from streamsend.config.loader import describe, normalise_flag, resolve
from streamsend.config.settings import (
    GROUPS,
    CommonSettings,
    DownloaderSettings,
    ReaderSettings,
    UploaderSettings,
    default_text,
    group_of,
    settings_fields,
)
from streamsend.errors import ExitStatus, StreamsendError, UsageError
from streamsend.live import Display
from streamsend.localkafka import commands as kafka_commands
from streamsend.logs import EscapingFormatter, JsonFormatter, event, formatter

log = logging.getLogger("streamsend")


def add_settings_flags(parser: argparse.ArgumentParser, cls: type[CommonSettings]) -> None:
    """One --flag per property of ``cls``, in sections (``settings.GROUPS``)."""
    parser.epilog = (
        "Every property can also come from --config FILE or STREAMSEND_<PROPERTY>; "
        "precedence is flag > environment > file > default. librdkafka properties "
        "(e.g. --security.protocol SSL) are passed to the Kafka client."
    )
    fields = settings_fields(cls)
    titles = [title for title, _ in GROUPS] + ["Other"]
    sections = {
        title: parser.add_argument_group(title)
        for title in titles
        if any(group_of(s.name) == title for _, s in fields)
    }
    for f, s in fields:
        flags = [f"--{s.name}"]
        if "." in s.name:
            flags.append("--" + s.name.replace(".", "-"))
        default = default_text(f, s) or "required"
        extra = f" One of: {', '.join(s.choices)}." if s.choices else ""
        shape: dict[str, Any] = {"metavar": "VALUE"}
        if str(f.type) == "bool":
            # --dry.run alone means yes; --dry.run no (or false, off, 0) still works.
            shape = {"metavar": "yes|no", "nargs": "?", "const": "true"}
            extra += f" {flags[0]} alone means yes."
        sections[group_of(s.name)].add_argument(
            *flags,
            dest=f"prop:{s.name}",
            default=None,
            help=f"{s.help}{extra} (default: {default})",
            **shape,
        )


def _passthrough(extra: list[str]) -> dict[str, str]:
    """``--linger.ms 5`` / ``--linger.ms=5`` for properties outside the model."""
    found: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or arg == "--":
            raise UsageError(f"unexpected argument {arg!r}")
        if "=" in arg:
            name, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise UsageError(f"flag {arg} needs a value")
            name, value = arg[2:], extra[i + 1]
            i += 2
        found[normalise_flag(name)] = value
    return found


def _flags(args: argparse.Namespace, extra: list[str]) -> dict[str, str]:
    flags = {
        key.removeprefix("prop:"): value
        for key, value in vars(args).items()
        if key.startswith("prop:") and value is not None
    }
    flags.update(_passthrough(extra))
    return flags


# The text formatter under its former name (tests format records with it).
_EscapingFormatter = EscapingFormatter


def _setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
    # librdkafka is chatty at INFO (connection churn, coordinator moves); its warnings
    # and errors still show, and DEBUG shows everything.
    logging.getLogger("streamsend.librdkafka").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.WARNING
    )


def _logging_json() -> bool:
    """Whether the configuration has been read and asked for JSON logs."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def _load(cls: type[CommonSettings], args: argparse.Namespace, extra: list[str]) -> CommonSettings:
    settings = resolve(cls, file=args.config, flags=_flags(args, extra))
    _setup_logging(settings.log_level, settings.log_format)
    for key, value in sorted(describe(settings).items()):
        log.debug("config %s=%s", key, value)
    return settings


def run_upload(args: argparse.Namespace, extra: list[str]) -> int:
    from streamsend.upload.service import Uploader

    settings = _load(UploaderSettings, args, extra)
    assert isinstance(settings, UploaderSettings)
    with Display.for_terminal(args.quiet, settings.log_format) as display:
        Uploader(settings, once=args.once, display=display).run()
    return ExitStatus.OK


def run_download(args: argparse.Namespace, extra: list[str]) -> int:
    from streamsend.download.service import Downloader

    settings = _load(DownloaderSettings, args, extra)
    assert isinstance(settings, DownloaderSettings)
    with Display.for_terminal(args.quiet, settings.log_format) as display:
        Downloader(settings, display=display).run()
    return ExitStatus.OK


def run_send(args: argparse.Namespace, extra: list[str]) -> int:
    import shutil
    import tempfile

    from streamsend.upload.send import SEND_PROPERTIES, Sender, send_roots

    roots = send_roots(args.paths)
    work = tempfile.mkdtemp(prefix="streamsend-send-")  # the sender's lock and key file
    try:
        flags = {**_flags(args, extra), **SEND_PROPERTIES, "input.dir": work}
        settings = resolve(UploaderSettings, file=args.config, flags=flags)
        _setup_logging(settings.log_level, settings.log_format)
        sender = Sender(settings, roots)
        sender.run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if sender.manifest is not None:
        size = sum(f.size for f in sender.manifest.files)
        print(
            f"{len(sender.manifest.files)} files, {size / 2**20:.1f} MiB sent "
            f"(send {sender.manifest.transfer}), all acknowledged"
        )
    return ExitStatus.OK


def run_receive(args: argparse.Namespace, extra: list[str]) -> int:
    from streamsend.download.receive import Receiver

    settings = _load(DownloaderSettings, args, extra)
    assert isinstance(settings, DownloaderSettings)
    receiver = Receiver(settings, timeout=args.timeout)
    receiver.run()
    print(receiver.summary)
    return ExitStatus.OK


def run_demo(args: argparse.Namespace) -> int:
    from streamsend.demo import run

    _setup_logging("INFO" if args.verbose else "ERROR")
    return run(args.dir, verbose=args.verbose)


def run_keygen(args: argparse.Namespace) -> int:
    from streamsend.wire.agekeys import keygen

    if args.output is None:
        raise UsageError("give -o FILE: streamsend keygen never prints a secret key")
    print(keygen(args.output))
    return ExitStatus.OK


def run_inspect(args: argparse.Namespace, extra: list[str]) -> int:
    import json

    from streamsend.inspection import Inspection, render_text
    from streamsend.transport.kafka_clients import KafkaTransport
    from streamsend.wire.sealed import Opener

    settings = _load(ReaderSettings, args, extra)
    assert isinstance(settings, ReaderSettings)
    opener = Opener.for_identity_file(settings.encryption_identity_file)
    ends: dict[int, tuple[int, int]] = {}
    transport = KafkaTransport(settings, "inspect")
    found = Inspection(opener).add_all(transport.read_topic(settings.topic, ends))
    if args.json:
        print(json.dumps(found.document(settings.topic, ends), indent=2))
    else:
        print(render_text(found, settings.topic, ends))
    return ExitStatus.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamsend",
        description="Stream files of any size through Apache Kafka, rebuilt byte for byte.",
    )
    parser.add_argument("--version", action="version", version=f"streamsend {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    up = sub.add_parser(
        "upload", allow_abbrev=False, help="watch input.dir and stream its files to the topic"
    )
    _config_flag(up)
    up.add_argument(
        "--once",
        action="store_true",
        help="send every file eligible now, wait for every acknowledgement, then exit "
        "(non-zero naming the files that failed)",
    )
    _quiet_flag(up)
    add_settings_flags(up, UploaderSettings)
    up.set_defaults(handler=run_upload, takes_extra=True)

    down = sub.add_parser(
        "download", allow_abbrev=False, help="rebuild the files of the topic under output.dir"
    )
    _config_flag(down)
    _quiet_flag(down)
    add_settings_flags(down, DownloaderSettings)
    down.set_defaults(handler=run_download, takes_extra=True)

    send = sub.add_parser(
        "send",
        allow_abbrev=False,
        help="send files and directories once, then a manifest listing them",
        description=(
            "Send each PATH once, on the uploader's core: a file under its base name, a "
            "directory as the tree below its base name. Nothing is renamed or deleted, no "
            "state topic is used (every file is sent), and once every file is acknowledged "
            "a manifest record lists them so that 'streamsend receive' knows when it has "
            "everything. Uploader properties apply (encryption.recipients, compression...)."
        ),
    )
    send.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or directory")
    _config_flag(send)
    add_settings_flags(send, UploaderSettings)
    send.set_defaults(handler=run_send, takes_extra=True)

    receive = sub.add_parser(
        "receive",
        allow_abbrev=False,
        help="download until every file of the sends seen is delivered and verified",
        description=(
            "Run the downloader from the topic's beginning under a consumer group of its "
            "own and exit 0 once at least one send's manifest was seen and every file of "
            "every manifest seen is delivered and verified (or was by an earlier run into "
            "output.dir), and the topic has been read to its end; exit 6 naming what is "
            "missing after --timeout."
        ),
    )
    _config_flag(receive)
    receive.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long, naming what is missing (default: 300)",
    )
    add_settings_flags(receive, DownloaderSettings)
    receive.set_defaults(handler=run_receive, takes_extra=True)

    demo = sub.add_parser(
        "demo",
        help="start the local Kafka, stream a sample directory through it and verify it",
    )
    demo.add_argument("--dir", type=Path, default=Path(".streamsend-demo"), help="work directory")
    demo.add_argument("--verbose", action="store_true", help="show the services' logs")
    demo.set_defaults(handler=run_demo, takes_extra=False)

    keygen = sub.add_parser(
        "keygen",
        help="make an age identity for end-to-end encryption; print its recipient",
        description=(
            "Write a new age X25519 identity (AGE-SECRET-KEY-1...) to FILE with mode 0600, "
            "never over an existing file, in age-keygen's format, and print its recipient "
            "(age1...) on stdout. Give the recipient to uploaders (encryption.recipients) "
            "and FILE to a downloader (encryption.identity.file). Keys made by age-keygen "
            "work as well."
        ),
    )
    keygen.add_argument("-o", "--output", type=Path, metavar="FILE", help="identity file to write")
    keygen.set_defaults(handler=run_keygen, takes_extra=False)

    inspect = sub.add_parser(
        "inspect",
        allow_abbrev=False,
        help="list what a topic holds, file by file, without writing or joining a group",
        description=(
            "Read every partition of the topic from its beginning to its end as of now, "
            "by assignment (no consumer group, no commit, nothing written), and list per "
            "uploader and path each version: size, chunks present / expected, complete, "
            "incomplete or aborted, encrypted or not, first and last partition:offset; "
            "totals at the end. Encrypted files show their paths only with "
            "--encryption.identity.file. JSON shape: docs/operations.md."
        ),
    )
    _config_flag(inspect)
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    add_settings_flags(inspect, ReaderSettings)
    inspect.set_defaults(handler=run_inspect, takes_extra=True)

    kafka_commands.register(sub)
    return parser


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "--config-file",
        type=Path,
        metavar="FILE",
        help="Java .properties file with Streamsend and librdkafka properties",
    )


def _quiet_flag(parser: argparse.ArgumentParser) -> None:
    # A flag, not a property: it is about the terminal of this one run, and a service
    # started from a config file has no terminal (nothing is animated there anyway).
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no live progress display on a terminal: log lines only, as without a terminal",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(args_list)
    traceback = args.traceback or "--traceback" in extra
    extra = [e for e in extra if e != "--traceback"]
    try:
        if extra and not getattr(args, "takes_extra", False):
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        if getattr(args, "takes_extra", False):
            return int(args.handler(args, extra))
        return int(args.handler(args))
    except StreamsendError as exc:
        if traceback:
            log.exception("%s", exc)
        if _logging_json():
            # Under log.format=json the last line is JSON too, so stderr parses whole.
            fields = event("run.error", outcome="error", exit_code=int(exc.exit_status))
            log.error("streamsend: error: %s", exc, extra=fields)
        else:
            print(f"streamsend: error: {exc}", file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        print("streamsend: interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)
