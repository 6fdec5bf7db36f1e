#!/usr/bin/env bash
# The main job on the embedded local Kafka: install, start Kafka, stream a sample
# directory from an uploader to a downloader, verify every file, print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> installing Streamsend into .venv" >&2
scripts/bootstrap.sh
echo "==> starting the local Kafka (first run resolves the broker jars from Maven Central)" >&2
.venv/bin/streamsend kafka up >&2
echo "==> streaming a sample directory through Kafka" >&2
exec .venv/bin/streamsend demo "$@"
