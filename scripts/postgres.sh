#!/usr/bin/env bash
# A PostgreSQL cluster for the MLflow tracking server, kept in one directory.
#
#   scripts/postgres.sh start DIR [PORT]   create (first time) and start it; prints the URL
#   scripts/postgres.sh url DIR            print the SQLAlchemy URL of the database `mlflow`
#   scripts/postgres.sh stop DIR           stop it (the data stays in DIR)
#   scripts/postgres.sh status DIR         exit 0 when it is running
#
# It listens on 127.0.0.1:PORT only (PORT: a free one when not given) and on a unix socket in
# DIR/socket. TCP logins need the password generated at creation (kept in DIR/url, mode 600).
# The URL names the psycopg2 driver (SQLAlchemy 2.1 would otherwise look for psycopg 3).
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user, which
# must be able to reach DIR (choose it under /tmp, not under a private home directory).
# The programs come from $PG_BIN, else PATH, else Debian's /usr/lib/postgresql/<version>/bin.
set -euo pipefail

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        echo "$PG_BIN"
    elif command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
    else
        local candidates=(/usr/lib/postgresql/*/bin/pg_ctl)
        [[ -x "${candidates[-1]}" ]] ||
            die "PostgreSQL is not installed (no pg_ctl); on Debian: apt-get install postgresql"
        # The glob sorts 10 before 9; sort by version to take the newest.
        printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1 | xargs dirname
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Run a PostgreSQL program as the user that owns the cluster.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

[[ $# -ge 2 ]] || usage
command=$1
[[ "$command" != start ]] || mkdir -p "$2"
dir=$(cd "$2" 2>/dev/null && pwd) || dir=$2
data=$dir/data
socket=$dir/socket
bin=$(find_bin)

case $command in
start)
    port=${3:-}
    if [[ -f "$data/PG_VERSION" ]] && as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        cat "$dir/url"
        exit 0
    fi
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run the server"
        chown postgres: "$dir"
        runuser -u postgres -- test -w "$dir" ||
            die "the postgres user cannot reach $dir (a parent directory is private: chmod o+x it, or use a new directory in /tmp)"
    fi
    if [[ ! -f "$data/PG_VERSION" ]]; then
        password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
        port=${port:-$(free_port)}
        as_owner mkdir -p "$data" "$socket"
        pwfile=$(as_owner mktemp "$dir/.pw.XXXXXX")
        printf '%s\n' "$password" | as_owner tee "$pwfile" >/dev/null
        as_owner "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" --auth-local=trust \
            --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        as_owner rm -f "$pwfile"
        # Only loopback TCP and our own socket directory; nothing else.
        printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $port" \
            "unix_socket_directories = '$socket'" "max_connections = 100" \
            | as_owner tee -a "$data/postgresql.conf" >/dev/null
        (umask 077 && echo "postgresql+psycopg2://postgres:$password@127.0.0.1:$port/mlflow" >"$dir/url")
    elif [[ -n "$port" ]] && ! grep -q "^port = $port\$" "$data/postgresql.conf"; then
        echo "postgres.sh: $dir already holds a cluster; PORT $port ignored" >&2
    fi
    as_owner "$bin/pg_ctl" start -D "$data" -l "$data/server.log" -w -t 60 >/dev/null ||
        { tail -n 20 "$data/server.log" >&2; die "the server did not start (log: $data/server.log)"; }
    port=$(sed -n 's|^postgresql[^:]*://[^@]*@127.0.0.1:\([0-9]*\)/.*|\1|p' "$dir/url")
    exists=$(as_owner "$bin/psql" -h "$socket" -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")
    if [[ "$exists" != 1 ]]; then
        as_owner "$bin/createdb" -h "$socket" -p "$port" -U postgres mlflow ||
            die "could not create the database 'mlflow'"
    fi
    cat "$dir/url"
    ;;
url)
    [[ -f "$dir/url" ]] || die "no cluster in $dir (run: $0 start $dir)"
    cat "$dir/url"
    ;;
stop)
    if [[ -f "$data/PG_VERSION" ]] && as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null
    fi
    ;;
status)
    [[ -f "$data/PG_VERSION" ]] && as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
    ;;
*)
    usage
    ;;
esac
