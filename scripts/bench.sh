#!/usr/bin/env bash
# The benchmark suite: every figure of issue 8 as one table, also written as JSON to
# bench/results/<date>-<host>[-quick].json and bench/results/latest.json.
# Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts (or reuses) the local Kafka.
# Arguments go to the suite:  scripts/bench.sh --quick | --only large,latency | --large 4G
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c 'import streamsend' 2>/dev/null; then
    echo "==> installing Streamsend into .venv" >&2
    scripts/bootstrap.sh
fi
exec .venv/bin/python -m bench "$@"
