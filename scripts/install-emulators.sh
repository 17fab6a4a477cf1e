#!/usr/bin/env bash
# Installs the BigQuery and GCS emulators into .venv at the repo root (gitignored).
# Idempotent: a second run with everything present does nothing and prints nothing.
# Pins and the one-time spatial import follow REFERENCE.md section 3 (measured here).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.bizon-emulators-installed"
[ -f "$stamp" ] && exit 0
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 duckdb-extensions==1.5.5 \
  numpy gcp-storage-emulator
# bqemulator loads DuckDB's spatial extension at start; it must be imported once.
"$venv/bin/python" -c "from duckdb_extensions import import_extension; import_extension('spatial')" >/dev/null
touch "$stamp"
