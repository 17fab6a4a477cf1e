#!/usr/bin/env bash
# Starts a private PostgreSQL cluster for a test: `start-postgres.sh DIR PORT`
# initializes DIR/data (trust authentication, reachable only on 127.0.0.1),
# starts it on PORT with its socket and log in DIR, creates the database
# `bizon` and prints its URL. Stop it with `start-postgres.sh --stop DIR`.
# As root it runs as the `postgres` OS user (postgres refuses root), which
# then owns DIR; DIR's parents must let that user through.
set -euo pipefail
bin=$(compgen -G "/usr/lib/postgresql/*/bin" | sort -V | tail -1 || true)
if [[ -z "$bin" ]]; then
    echo "start-postgres.sh: no PostgreSQL; run scripts/install-postgres.sh" >&2
    exit 1
fi
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
if [[ "${1:-}" == "--stop" ]]; then
    as_owner "$bin/pg_ctl" -D "$2/data" stop -m immediate >/dev/null
    exit 0
fi
dir=$1
port=$2
mkdir -p "$dir"
if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$dir"
fi
as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
    || { cat "$dir/postgres.log" >&2; exit 1; }
as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres bizon
echo "postgres://postgres@127.0.0.1:$port/bizon"
