#!/usr/bin/env bash
# Installs Debian's PostgreSQL for the `serve` several-hosts test, which starts
# its own private cluster (scripts/start-postgres.sh). Idempotent: a no-op
# once an initdb is there.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-postgres.sh: PostgreSQL is missing and this is not root; run: sudo apt-get install postgresql" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
