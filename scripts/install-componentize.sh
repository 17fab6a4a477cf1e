#!/usr/bin/env bash
# Installs the WebAssembly component builders for Python and JavaScript plugins
# and transforms (REFERENCE.md section 7): componentize-py 0.25.1 into .venv
# (PyPI) and componentize-js 0.23.0 with the preview2-shim it needs pinned
# (npm) into .tools/js. Idempotent and quiet when already installed; prints
# nothing on success. Paths: .venv/bin/componentize-py,
# .tools/js/node_modules/.bin/componentize-js.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
if [ ! -x "$venv/bin/componentize-py" ]; then
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
"$venv/bin/componentize-py" --version >/dev/null

js="$root/.tools/js"
if [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
  mkdir -p "$js"
  # jco componentize 1.35 cannot read a WIT path; componentize-js is called
  # directly, and it needs this exact preview2-shim.
  (cd "$js" && [ -f package.json ] || echo '{"private":true}' > package.json)
  (cd "$js" && npm install --silent --no-audit --no-fund \
      @bytecodealliance/componentize-js@0.23.0 \
      @bytecodealliance/preview2-shim@0.25.0 >/dev/null)
fi
