#!/usr/bin/env bash
# Installs Debian's clickhouse-server (18.16) for the ClickHouse plugin's
# end-to-end test, which starts its own server on free ports in a temporary
# directory. Idempotent: a no-op once the binary is there.
set -euo pipefail
if command -v clickhouse-server >/dev/null 2>&1 || [[ -x /usr/bin/clickhouse ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-clickhouse.sh: clickhouse-server is missing and this is not root; run: sudo apt-get install clickhouse-server" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends clickhouse-server clickhouse-client >/dev/null
