#!/usr/bin/env bash
# Set up and run the whole test suite. As root (CI, containers) it also installs and starts
# PostgreSQL (so database tests run on both backends) and Chromium (browser tests);
# otherwise those tests are skipped with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" = 0 ] && [ -z "${SPAMGUARD_TEST_POSTGRES_URL:-}" ]; then
    eval "$(bash .ci/postgres.sh)"
fi
if [ "$(id -u)" = 0 ] && [ ! -x /usr/bin/chromium ]; then
    (timeout 900 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq chromium >/dev/null) >&2 \
        || echo "chromium could not be installed: browser tests will be skipped" >&2
fi
export SPAMGUARD_ARTIFACTS="${SPAMGUARD_ARTIFACTS:-$(pwd)/artifacts/screenshots}"
mkdir -p "$SPAMGUARD_ARTIFACTS"
echo "browser test screenshots: $SPAMGUARD_ARTIFACTS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# One process per core, each taking whole test files (module fixtures stay per process):
# about half the time of one process on 2 cores (9 minutes for the whole suite, SQLite and
# PostgreSQL, in December 2026). SPAMGUARD_TEST_WORKERS=0 runs in this process.
.venv/bin/python -m pytest -n "${SPAMGUARD_TEST_WORKERS:-auto}" --dist loadfile "$@"
