#!/usr/bin/env bash
# Installs the WebAssembly component builders for Python and JavaScript plugins
# and transforms, the versions the tests run with: componentize-py 0.25.1 into .venv
# (PyPI) and componentize-js 0.23.0 with the preview2-shim it needs pinned
# (npm) into .tools/js. Idempotent and quiet when already installed; prints
# nothing on success. Paths: .venv/bin/componentize-py,
# .tools/js/node_modules/.bin/componentize-js.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
# Another version than the pin is replaced by it.
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py 0.25.1" ]; then
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
[ "$("$venv/bin/componentize-py" --version)" = "componentize-py 0.25.1" ] ||
  { echo "install-componentize.sh: .venv/bin/componentize-py is not 0.25.1 after the install" >&2; exit 1; }

js="$root/.tools/js"
js_version() { node -p "require('$js/node_modules/@bytecodealliance/componentize-js/package.json').version" 2>/dev/null; }
if [ "$(js_version)" != 0.23.0 ]; then
  mkdir -p "$js"
  # jco componentize 1.35 cannot read a WIT path; componentize-js is called
  # directly, and it needs this exact preview2-shim.
  (cd "$js" && [ -f package.json ] || echo '{"private":true}' > package.json)
  (cd "$js" && npm install --silent --no-audit --no-fund \
      @bytecodealliance/componentize-js@0.23.0 \
      @bytecodealliance/preview2-shim@0.25.0 >/dev/null)
fi
[ "$(js_version)" = 0.23.0 ] ||
  { echo "install-componentize.sh: .tools/js has no componentize-js 0.23.0 after the install" >&2; exit 1; }
