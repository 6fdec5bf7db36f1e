"""Streamsend's benchmark suite (issue 8): ``python -m bench --help``.

Not a test: a script that measures the real CLI, each side as its own process, against a
real broker, and writes its table to bench/results/.
"""
