#!/usr/bin/env bash
# Installs Debian's clickhouse-server (18.16) for the ClickHouse plugin's
# end-to-end test, which starts its own server on free ports in a temporary
# directory. Idempotent: a no-op once it is there; another version than the
# 18.16 the plugin is tested against fails, naming both.
set -euo pipefail
want=18.16
version() { dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null || true; }
if [[ -z "$(version)" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-clickhouse.sh: clickhouse-server is missing and this is not root; run: sudo apt-get install clickhouse-server" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends clickhouse-server clickhouse-client >/dev/null
fi
got="$(version)"
if [[ "$got" != "$want".* ]]; then
    echo "install-clickhouse.sh: clickhouse-server is ${got:-missing}, not $want (Debian 12's, which the tests were written against)" >&2
    exit 1
fi
