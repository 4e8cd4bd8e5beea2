#!/usr/bin/env bash
# An MLflow tracking server on PostgreSQL, in the foreground: `make server` runs this.
#
#   scripts/server.sh [DIR]
#
# DIR (default: mlflow-server) keeps the PostgreSQL cluster (DIR/postgres, see postgres.sh)
# and the artifacts (DIR/artifacts), so runs survive a restart. The server listens on
# HOST:PORT (default 127.0.0.1:5000); point sweeps at it with tracking.uri=http://HOST:PORT.
# Ctrl-C (or SIGTERM) stops the server, then PostgreSQL.
#
# Environment: HOST, PORT, WORKERS (server processes, default 2), DB_PORT (PostgreSQL's port
# when the cluster is created; default a free one), MLFLOW (the mlflow program).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-mlflow-server}
host=${HOST:-127.0.0.1}
port=${PORT:-5000}
mlflow=${MLFLOW:-mlflow}

command -v "$mlflow" >/dev/null 2>&1 || {
    echo "server.sh: '$mlflow' not found; activate the project's virtualenv or use make server" >&2
    exit 1
}
mkdir -p "$dir/artifacts"
dir=$(cd "$dir" && pwd)

pid=
cleanup() {
    trap - EXIT INT TERM
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    "$here/postgres.sh" stop "$dir/postgres" || true
    echo "server.sh: stopped the MLflow server and PostgreSQL (data kept in $dir)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

url=$("$here/postgres.sh" start "$dir/postgres" ${DB_PORT:+"$DB_PORT"})

echo "MLflow tracking server: http://$host:$port"
echo "  backend store: PostgreSQL, data in $dir/postgres"
echo "  artifacts:     $dir/artifacts"
echo "  sweep:         python -m pipeline -m ... tracking.uri=http://$host:$port"
echo "  Ctrl-C stops the server and PostgreSQL."

# The server's job runner (GenAI judges and scorers) is not needed for training runs.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
    "$mlflow" server \
    --backend-store-uri "$url" \
    --artifacts-destination "$dir/artifacts" \
    --host "$host" \
    --port "$port" \
    --workers "${WORKERS:-2}" &
pid=$!
wait "$pid"
