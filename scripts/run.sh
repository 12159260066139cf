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
if ! .venv/bin/spamguard models --json | grep -q '"status": "active"'; then
    .venv/bin/spamguard train
fi
exec .venv/bin/spamguard serve "$@"
