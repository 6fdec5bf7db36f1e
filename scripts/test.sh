#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite against a real Kafka
# broker that the test session starts itself (or KAFKA_BOOTSTRAP_SERVERS, when set).
# Extra arguments go to pytest, e.g.  scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
# Resolve the broker jars once, up front, so no test pays for (or times out on) it.
.venv/bin/streamsend kafka fetch >/dev/null
exec .venv/bin/python -m pytest "$@"
