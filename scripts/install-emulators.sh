#!/usr/bin/env bash
# Installs the BigQuery and GCS emulators into .venv at the repo root (gitignored).
# Idempotent: a second run with the pinned versions present does nothing and
# prints nothing; another version is replaced by the pinned one.
# Pinned: the versions that install and run here; bqemulator needs DuckDB's
# spatial extension, imported once from PyPI's duckdb-extension-spatial.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
# What the tests were written against: bqemulator 1.4's quirks are worked
# around in tests/e2e (support/fault.rs, support/storage_write.rs).
pins=(bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 duckdb-extensions==1.5.5)
installed() {
  [ -x "$venv/bin/gcp-storage-emulator" ] || return 1
  "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
}
installed && exit 0
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" numpy gcp-storage-emulator
# bqemulator loads DuckDB's spatial extension at start; it must be imported once.
"$venv/bin/python" -c "from duckdb_extensions import import_extension; import_extension('spatial')" >/dev/null
if ! installed; then
  echo "install-emulators.sh: after the install, .venv does not hold ${pins[*]} and gcp-storage-emulator" >&2
  exit 1
fi
