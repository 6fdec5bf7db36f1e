"""The thin command line: parse, dispatch, and turn errors into messages and exit codes.

This is the only module that prints an error for the user or picks an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streamsend import __version__
from streamsend.errors import ExitStatus, StreamsendError
from streamsend.localkafka import commands as kafka_commands

log = logging.getLogger("streamsend")


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
    kafka_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        return int(args.handler(args))
    except StreamsendError as exc:
        if args.traceback:
            log.exception("%s", exc)
        print(f"streamsend: error: {exc}", file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        print("streamsend: interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)
