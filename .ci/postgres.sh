#!/usr/bin/env bash
# Start a throw-away PostgreSQL on loopback for the test suite (idempotent; no systemd needed).
#
# Usage:  eval "$(bash .ci/postgres.sh)"
# Everything goes to stderr except the last line:
#   export SPAMGUARD_TEST_POSTGRES_URL=postgresql+psycopg://USER:PASSWORD@127.0.0.1:PORT/postgres
# The role may create databases: the tests clone a migrated template per test (and reuse one
# a test gave back unchanged, emptied: tests/fixtures_db.py).
set -euo pipefail
exec 3>&1 1>&2  # keep stdout clean for the export line

PG_USER="${SPAMGUARD_PG_USER:-spamguard}"
PG_PASSWORD="${SPAMGUARD_PG_PASSWORD:-spamguard-test}"
PG_PORT="${SPAMGUARD_PG_PORT:-5432}"
CLUSTER="${SPAMGUARD_PG_CLUSTER:-main}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    echo "postgres.sh: installing Debian's postgresql" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {f=1} END {exit !f}'; then
    echo "postgres.sh: creating cluster $VERSION/$CLUSTER on port $PG_PORT" >&2
    as_root pg_createcluster --port "$PG_PORT" "$VERSION" "$CLUSTER"
fi
PORT="$(pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $3}')"

# Loopback only; the socket directory vanishes in fresh containers.
as_root install -d -m 2775 -o postgres -g postgres /var/run/postgresql
CONF_DIR="/etc/postgresql/$VERSION/$CLUSTER/conf.d"
as_root install -d "$CONF_DIR"
echo "listen_addresses = '127.0.0.1'" | as_root tee "$CONF_DIR/spamguard-ci.conf" >/dev/null

STATUS="$(pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $4}')"
if [ "$STATUS" != "online" ]; then
    echo "postgres.sh: starting cluster $VERSION/$CLUSTER" >&2
    # The server outlives this script: it must not inherit the caller's pipes (fd 3 is the
    # $(...) of `eval "$(bash .ci/postgres.sh)"`, which would otherwise wait for it forever).
    START_LOG="$(mktemp)"
    if ! as_root pg_ctlcluster "$VERSION" "$CLUSTER" start </dev/null >"$START_LOG" 2>&1 3>&-; then
        cat "$START_LOG" >&2
        rm -f "$START_LOG"
        exit 1
    fi
    rm -f "$START_LOG"
fi
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 1
done
pg_isready -h 127.0.0.1 -p "$PORT" >&2

psql_admin() { as_root runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != "1" ]; then
    psql_admin -c "CREATE ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
else
    psql_admin -c "ALTER ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
fi
# DROP DATABASE ... WITH (FORCE) must be able to end an autovacuum worker on a test database.
psql_admin -c "GRANT pg_signal_backend TO \"$PG_USER\""

echo "postgres.sh: PostgreSQL $VERSION ready on 127.0.0.1:$PORT as $PG_USER" >&2
echo "export SPAMGUARD_TEST_POSTGRES_URL=postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/postgres" >&3
