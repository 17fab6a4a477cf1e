#!/usr/bin/env bash
# Installs moto's S3 server into .venv at the repo root (gitignored): the
# durable storage of the tansu broker that the tests SIGKILL and restart
# (tansu 0.6 from PyPI stores in `memory://` or `s3://`; tests/e2e/support/durable.rs).
# Only S3 and the server's own dependencies: `moto[server]` would bring every
# AWS service's (cfn-lint, sympy, docker, ...), three times the download.
# Idempotent: nothing is done when the pinned versions are there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
pins=(moto==5.2.6 py-partiql-parser==0.6.3 Flask==3.1.3 flask-cors==6.0.5)
installed() {
  [ -x "$venv/bin/moto_server" ] || return 1
  "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
}
installed && exit 0
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
if ! installed; then
  echo "install-moto.sh: after the install, .venv does not hold ${pins[*]} and moto_server" >&2
  exit 1
fi
