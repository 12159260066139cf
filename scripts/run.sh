#!/usr/bin/env bash
# Set up, create/upgrade the database, train the default model if none is active, serve.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SPAMGUARD_HOME="${SPAMGUARD_HOME:-$(pwd)/instance}"
if [ -z "${SPAMGUARD_SECRET_KEY:-}" ]; then
    echo "SPAMGUARD_SECRET_KEY is not set: running in development mode (set it for production)" >&2
    export SPAMGUARD_ENV="${SPAMGUARD_ENV:-development}"
fi
.venv/bin/spamguard db upgrade
# Read the whole list before searching it: `| grep -q` stops reading at the first match,
# and under pipefail the writer's broken pipe (a list over the pipe's 64 KB, some 150
# versions) would count as "no active model" and train another.
versions=$(.venv/bin/spamguard models --json)
if ! grep -q '"status": "active"' <<<"$versions"; then
    .venv/bin/spamguard train
fi
exec .venv/bin/spamguard serve "$@"
