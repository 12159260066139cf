#!/usr/bin/env bash
# Create .venv and install spamguard with its test tools. Safe to run again (fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The CPU build of torch first: a plain "torch" requirement would pull a CUDA build of several GB.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --quiet "torch==2.13.0"
fi
.venv/bin/pip install --quiet -e '.[test]'
echo "spamguard installed in $(pwd)/.venv" >&2
