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
elif [ -n "${SPAMGUARD_ALSO_TRAIN:-}" ]; then
    # SPAMGUARD_ALSO_TRAIN=present-day trains a first model: on an instance that already
    # serves one trained without those files it changes nothing now, so say so.
    .venv/bin/python - "$versions" <<'PY' >&2 || true
import json, sys
from pathlib import Path
from spamguard.config import load_settings
from spamguard.ml.also_train import recorded_paths
named = {p.resolve() for p in load_settings().also_train_paths or []}
for line in sys.argv[1].splitlines():
    version = json.loads(line)
    if version.get("status") != "active":
        continue
    meta = json.loads((Path(version["directory"]) / "model.json").read_text())
    if named != {p.resolve() for p in recorded_paths(meta)}:
        print(f"note: model {version['version']} is already active, trained with other "
              "also-train files than SPAMGUARD_ALSO_TRAIN names: run.sh trains only a first "
              "model, so it keeps serving; to switch, see docs/retraining.md, \"Present-day "
              "examples on a running instance\"")
PY
fi
exec .venv/bin/spamguard serve "$@"
