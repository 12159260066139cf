#!/usr/bin/env bash
# Create .venv and install spamguard with its test tools. Safe to run again (fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The CPU build of torch first: a plain "torch" requirement would pull a CUDA build of several GB.
# Where pip does not already offer the CPU wheel (this machine kind has it in its wheel folder),
# set SPAMGUARD_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --quiet ${SPAMGUARD_TORCH_INDEX_URL:+--index-url "$SPAMGUARD_TORCH_INDEX_URL"} \
        "torch==2.13.0"
fi
# (stderr hidden: before numpy is installed, torch warns that it cannot initialise NumPy)
if .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
    echo "setup: warning: torch in .venv is a CUDA build; for the CPU build run" \
         "SPAMGUARD_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu after removing .venv" >&2
fi
.venv/bin/pip install --quiet -e '.[test]'
echo "spamguard installed in $(pwd)/.venv" >&2
