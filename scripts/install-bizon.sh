#!/usr/bin/env bash
# Installs Bizon 0.6.4 (the version the bridge is written against,
# docs/bridge.md) into .venv-bizon, with the dependency pins of
# bench/bizon/requirements.txt. The bridge's tests and bench/bridge.sh run
# Bizon's sources with .venv-bizon/bin/python. Idempotent; prints nothing on
# success. Extras for Bizon's API sources: `.venv-bizon/bin/pip install
# "bizon[hubspot]==0.6.4"` (or gsheets, notion, ...).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-bizon"
want=0.6.4
have() { "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("bizon"))' 2>/dev/null; }
if [ "$(have)" != "$want" ]; then
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/bench/bizon/requirements.txt"
fi
got="$(have)"
if [ "$got" != "$want" ]; then
  echo "install-bizon: $venv has bizon ${got:-(none)}, expected $want" >&2
  exit 1
fi
