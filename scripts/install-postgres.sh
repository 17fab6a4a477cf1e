#!/usr/bin/env bash
# Installs Debian's PostgreSQL for the `serve` several-hosts test, which starts
# its own private cluster (scripts/start-postgres.sh). Idempotent: a no-op
# once an initdb is there; the newest one must run (`initdb --version`).
set -euo pipefail
initdb() { compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -1; }
if [[ -z "$(initdb)" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-postgres.sh: PostgreSQL is missing and this is not root; run: sudo apt-get install postgresql" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
if ! "$(initdb)" --version >/dev/null; then
    echo "install-postgres.sh: $(initdb) does not run" >&2
    exit 1
fi
