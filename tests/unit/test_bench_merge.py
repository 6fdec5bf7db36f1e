"""The benchmark suite's medians: rows of repeated runs are matched by figure."""

from __future__ import annotations

from bench.report import Section
from bench.suite import merge


def run(order: list[tuple[str, float]]) -> Section:
    section = Section("encryption", "")
    for figure, value in order:
        section.row(figure, value, "x", mb=value)
    return section


def test_rows_of_rotated_runs_are_merged_by_figure() -> None:
    first = run([("plain", 1.0), ("padded", 4.0), ("unpadded", 0.3)])
    second = run([("padded", 4.2), ("unpadded", 0.2), ("plain", 1.2)])
    merged = {row.figure: row for row in merge([first, second]).rows}
    assert merged["padded"].runs["mb"] == [4.0, 4.2]
    assert merged["unpadded"].runs["mb"] == [0.3, 0.2]
    assert merged["plain"].ratio == 1.1
