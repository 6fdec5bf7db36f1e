#!/usr/bin/env bash
# Create .venv (if needed) and install Streamsend into it. Usage: scripts/bootstrap.sh [EXTRAS]
# EXTRAS is "dev" for the test tools. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "streamsend: error: Python 3.11 or newer is needed as '$python' (set PYTHON=...)" >&2
    exit 3
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
