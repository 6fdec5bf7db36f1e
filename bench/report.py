"""The machine a run happened on, and the table and JSON it produced."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka

import streamsend

Value = float | int | str | None


@dataclass
class Row:
    """One line of a section's table. ``ratio`` (against ``ratio_of``) comes first."""

    figure: str
    ratio: float | None = None
    ratio_of: str = ""
    values: dict[str, Value] = field(default_factory=dict)
    note: str = ""
    headline: bool = True  # listed in the run's ratio summary
    runs: dict[str, list[float]] = field(default_factory=dict)  # every run's values


@dataclass
class Section:
    name: str
    title: str
    status: str = "not run"  # ok, failed, skipped
    seconds: float = 0.0
    setup: dict[str, Value] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    def row(
        self,
        figure: str,
        ratio: float | None = None,
        ratio_of: str = "",
        note: str = "",
        headline: bool = True,
        **values: Value,
    ) -> Row:
        found = Row(figure, ratio, ratio_of, dict(values), note, headline)
        self.rows.append(found)
        return found


def _first(path: str, prefix: str) -> str:
    try:
        with open(path, encoding="utf-8") as fp:
            for line in fp:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "src"))
    return {
        "host": socket.gethostname(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "ram_GiB": round(int(mem_kib) / 2**20, 1) if mem_kib.isdigit() else None,
        "kernel": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "streamsend": streamsend.__version__,
        "streamsend_path": str(Path(streamsend.__file__).parent),
        "commit": commit + ("+modified src" if dirty else ""),
    }


def _fmt(value: Value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


def _grid(header: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        return "  ".join(["  " + first, *rest, cells[-1]]).rstrip()

    return [render(header), *(render(r) for r in lines)]


def render(meta: dict[str, Any], sections: list[Section]) -> str:
    m = meta["machine"]
    out = [
        f"Streamsend benchmarks {m['date']} on {m['host']}: {m['cpu_count']} CPU "
        f"({m['cpu_model']}), {m['ram_GiB']} GiB RAM, {m['kernel']}, "
        f"load {'/'.join(map(str, m['load_average_at_start']))} at start",
        f"streamsend {m['streamsend']} at {m['commit'] or '?'}, confluent-kafka "
        f"{m['confluent_kafka']} (librdkafka {m['librdkafka']}), Python {m['python']}; "
        f"broker {meta['broker']['bootstrap']} ({meta['broker']['kind']}, message.max.bytes "
        f"{meta['broker']['message_max_bytes']:,}); {meta['mode']}",
        "",
        "Ratios",
    ]
    ratios = [
        [f"{s.name}: {r.figure}", f"{r.ratio:.2f}", f"of {r.ratio_of}"]
        for s in sections
        for r in s.rows
        if r.ratio is not None and r.headline
    ]
    out += _grid(["figure", "ratio", ""], ratios) if ratios else ["  (none measured)"]
    for s in sections:
        out += ["", f"[{s.name}] {s.title} ({s.status}, {s.seconds:.0f} s)"]
        if s.setup:
            out.append("  setup: " + ", ".join(f"{k} {_fmt(v)}" for k, v in s.setup.items()))
        if s.error:
            out.append(f"  FAILED: {s.error}")
        if s.rows:
            keys: list[str] = []
            for r in s.rows:
                keys += [k for k in r.values if k not in keys]
            header = ["figure", "ratio", *keys, "note"]
            lines = [
                [
                    r.figure,
                    f"{r.ratio:.2f}" if r.ratio is not None else "",
                    *(_fmt(r.values.get(k)) for k in keys),
                    r.note,
                ]
                for r in s.rows
            ]
            out += _grid(header, lines)
        out += [f"  note: {n}" for n in s.notes]
    return "\n".join(out)


def as_json(meta: dict[str, Any], sections: list[Section]) -> dict[str, Any]:
    return {**meta, "sections": {s.name: asdict(s) for s in sections}}


def write_results(directory: Path, name: str, data: dict[str, Any]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2) + "\n"
    paths = [directory / f"{name}.json", directory / "latest.json"]
    for path in paths:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
