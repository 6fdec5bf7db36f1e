"""Run the benchmark suite and print (and save) its table.

    scripts/bench.sh                      # everything; 1 GiB large file
    scripts/bench.sh --quick              # smaller sizes: a few minutes
    scripts/bench.sh --only large,latency --large 4G

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts (or reuses) the local Kafka of
``streamsend kafka up``. Writes bench/results/<date>-<host>[-quick].json and latest.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import BenchFailure, Child, Exit, Kafka, parse_size, streamsend_cli
from bench.context import Bench, Features, Sizes
from bench.report import Section, as_json, machine, render, write_results
from bench.sections import SECTIONS
from streamsend import localkafka

RESULTS = Path(__file__).resolve().parent / "results"
LOCAL_HEAP_MB = 384


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Streamsend benchmark suite: raw client limit, large file, small files, "
        "latency, peak RSS, partitions, downloader group, funnel, compression.",
        epilog="sections: "
        + "; ".join(f"{name} ({title})" for name, (_, title) in SECTIONS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these sections")
    parser.add_argument("--large", metavar="SIZE", help="large file size, e.g. 4G (default 1G)")
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="run each section N times and report medians (default 3, 1 with --quick)",
    )
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files and logs")
    parser.add_argument("--kafka-dir", type=Path, help="local Kafka directory (streamsend kafka)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(SECTIONS)).split(",") if n.strip()]
    if unknown := [n for n in names if n not in SECTIONS]:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    args.names = names
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    args.repeat = max(1, args.repeat)
    try:
        args.large_bytes = parse_size(args.large) if args.large else None
    except ValueError:
        parser.error(f"--large {args.large!r} is not a size (like 256M, 1G, 4G)")
    return args


def broker(kafka_dir: Path | None) -> tuple[str, dict[str, Any], list[Path]]:
    """The broker under test, what it is, and its data directories when it is local."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if not bootstrap:
        say("KAFKA_BOOTSTRAP_SERVERS is not set: starting the local Kafka (streamsend kafka up)")
        fresh = localkafka.status(kafka_dir) is None
        cluster = localkafka.up(dir=kafka_dir, heap_mb=LOCAL_HEAP_MB if fresh else None)
        bootstrap = cluster.bootstrap_servers
    local = localkafka.status(kafka_dir)
    if local is not None and set(bootstrap.split(",")) <= set(local.bootstrap_servers.split(",")):
        info = {"bootstrap": bootstrap, "kind": f"local, {len(local.nodes)} node(s), "
                f"{local.heap_mb} MiB heap"}  # fmt: skip
        return bootstrap, info, sorted(local.dir.glob("node-*/data"))
    return bootstrap, {"bootstrap": bootstrap, "kind": "external"}, []


def run_section(bench: Bench, name: str, repeat: int) -> Section:
    """Run a section ``repeat`` times; with more than one run every figure (ratios too,
    each from its own run's pair) is the median, and the JSON keeps every run's values."""
    fn, title = SECTIONS[name]
    say(f"[{name}] {title} ...")
    started = time.monotonic()
    runs: list[Section] = []
    for attempt in range(repeat):
        section = Section(name, title)
        runs.append(section)
        bench.run_index = attempt
        try:
            fn(bench, section)
            if section.status == "not run":
                section.status = "ok"
        except BenchFailure as exc:
            section.status, section.error = "failed", str(exc)
        except Exception as exc:
            section.status = "failed"
            section.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            Child.kill_all()
            bench.kafka.delete_all()
        if section.status != "ok":
            break
        if repeat > 1:
            say(f"[{name}] run {attempt + 1} of {repeat} done")
    result = runs[-1] if runs[-1].status != "ok" else merge(runs)
    result.seconds = round(time.monotonic() - started, 1)
    say(f"[{name}] {result.status} in {result.seconds:.0f} s {result.error}")
    return result


def merge(runs: list[Section]) -> Section:
    if len(runs) == 1:
        return runs[0]
    merged = runs[-1]
    merged.setup["runs"] = len(runs)
    merged.notes.append(f"every figure is the median of {len(runs)} runs")
    for row in merged.rows:
        # By figure, not by position: a section may emit its variants in a rotated order.
        same = [r for run in runs for r in run.rows if r.figure == row.figure]
        ratios = [r.ratio for r in same if r.ratio is not None]
        row.ratio = round(statistics.median(ratios), 2) if ratios else row.ratio
        for key, value in row.values.items():
            numbers = [v for r in same if isinstance(v := r.values.get(key), int | float)]
            if isinstance(value, int | float) and len(numbers) == len(same):
                row.values[key] = round(statistics.median(numbers), 2)
                row.runs[key] = numbers
        if ratios:
            row.runs["ratio"] = ratios
    return merged


def launch_floor(work: Path) -> Exit:
    """/bin/true through the launcher: the smallest peak RSS a measured process can
    show, and the time the launcher adds to a measured process's start."""
    return Child("launch-floor", ["/bin/true"], work / "launch-floor.log").finish(30)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    begun = time.monotonic()
    sizes = Sizes.choose(args.quick, args.large_bytes)
    bootstrap, broker_info, data_dirs = broker(args.kafka_dir)
    kafka = Kafka(bootstrap, data_dirs)
    broker_info["message_max_bytes"] = kafka.message_limit()
    work = args.work or Path(tempfile.mkdtemp(prefix="streamsend-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(kafka, work, sizes, Features.detect(streamsend_cli()))
    say(f"broker {bootstrap}; scratch {work}; features {bench.features}")
    meta: dict[str, Any] = {
        "machine": machine(),
        "broker": broker_info,
        "mode": ("quick run" if args.quick else "full run")
        + (f", medians of {args.repeat} runs" if args.repeat > 1 else ""),
        "sections_run": args.names,
        # Settings the children inherit from the environment change what is measured.
        "environment": {k: v for k, v in os.environ.items() if k.startswith("STREAMSEND_")},
        "sizes": sizes.__dict__,
        "features": {
            "partitioning": bench.features.partitioning,
            "compression_codecs": list(bench.features.codecs),
            "default_codec": bench.features.default_codec,
        },
    }
    sections: list[Section] = []
    try:
        for name in args.names:
            sections.append(run_section(bench, name, args.repeat))
            if not args.keep and sections[-1].status != "failed":
                shutil.rmtree(work / name, ignore_errors=True)
    except KeyboardInterrupt:
        Child.kill_all()
        kafka.delete_all()
        say("interrupted")
        return 130
    floor = launch_floor(work)
    meta["launch_floor"] = {"peak_RSS_MiB": round(floor.peak_rss / 2**20, 1),
                            "seconds": round(floor.seconds, 3)}  # fmt: skip
    meta["total_seconds"] = round(time.monotonic() - begun, 1)
    print(render(meta, sections))
    print(f"\n(total {meta['total_seconds']:.0f} s. Every process is started through "
          f"bench/launch.py, which adds {floor.seconds * 1000:.0f} ms to its time and puts "
          f"a floor of {floor.peak_rss / 2**20:.1f} MiB under its peak RSS.)")  # fmt: skip
    stamp = time.strftime("%Y-%m-%d")
    name = f"{stamp}-{socket.gethostname()}" + ("-quick" if args.quick else "")
    if args.only:
        name += "-" + "+".join(args.names)
    for path in write_results(args.results, name, as_json(meta, sections)):
        say(f"wrote {path}")
    failed = [s.name for s in sections if s.status == "failed"]
    if failed:
        say(f"FAILED: {', '.join(failed)}; their files and logs are kept in {work}")
    elif not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0
