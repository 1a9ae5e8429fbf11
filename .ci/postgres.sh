#!/usr/bin/env bash
# Install (from Debian's packages, if missing) and start a throw-away PostgreSQL server on
# loopback for the test suite. Idempotent: a server already started by this script is reused.
# Prints the SQLAlchemy URL of a database the tests may use freely.
set -euo pipefail
PORT="${MLOPS_LAB_TEST_PG_PORT:-54329}"
DATA="${MLOPS_LAB_TEST_PG_DATA:-/tmp/mlops-lab-pg-$PORT}"
log() { echo "[postgres] $*" >&2; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# PostgreSQL refuses to run as root: use the 'postgres' account the package creates.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

if ! as_pg "$bindir/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
    as_pg "$bindir/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  log "starting on 127.0.0.1:$PORT ($DATA)"
  as_pg "$bindir/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
    -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >&2
fi
if ! as_pg "$bindir/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='mlops_lab_test'" | grep -q 1; then
  as_pg "$bindir/createdb" -h 127.0.0.1 -p "$PORT" -U postgres mlops_lab_test
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/mlops_lab_test"
