#!/usr/bin/env bash
# Builds the Python plugins and transforms (plugins/python-*/app.py, tests/plugins/python-*/app.py)
# with the repository's bizon-plugin SDK into target/wasm/python/<dir>.wasm
# (python-jsonl -> python_jsonl.wasm), and the JavaScript ones
# (plugins/js-*/app.js, tests/plugins/js-*/app.js, destinations or transforms) with @bizon/plugin (sdk/js)
# into target/wasm/js/<dir>.wasm. Installs componentize-py and the Python SDK
# (editable, with pytest) into .venv, componentize-js into .tools/js, on first
# use. A component newer than its sources is left alone, so a second run
# takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-componentize.sh
# The test extra brings requests, urllib3 and httpx: plugins that use them
# bundle them from .venv (python-webhook, tests/plugins/python-http).
if [[ ! -x .venv/bin/bizon-plugin || ! -x .venv/bin/pytest ]] || ! .venv/bin/python -c 'import requests, urllib3, httpx' 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check -e 'sdk/python[test]'
fi

# The SDK carries its own copy of the WIT, like the Rust SDK.
for wit in destination.wit transform.wit; do
    if ! cmp -s "wit/$wit" "sdk/python/src/bizon_plugin/wit/$wit"; then
        echo "sdk/python/src/bizon_plugin/wit/$wit differs from wit/$wit" >&2
        exit 1
    fi
done
# docs/sdk-python.md shows these verbatim; the build proves they build.
for example in tests/plugins/python-mydest/app.py plugins/python-jsonl/app.py plugins/python-webhook/app.py \
    plugins/python-flatten/app.py; do
    if [[ "$(cat docs/sdk-python.md)" != *"$(cat "$example")"* ]]; then
        echo "docs/sdk-python.md no longer shows $example" >&2
        exit 1
    fi
done

# stale WASM SOURCE...: whether WASM is missing or older than a source.
stale() {
    local wasm=$1 source
    shift
    [[ -f $wasm ]] || return 0
    for source in "$@"; do
        [[ $source -nt $wasm ]] && return 0
    done
    return 1
}

out=target/wasm/python
mkdir -p "$out"
sdk_sources=$(find sdk/python/src -name '*.py' -o -name '*.wit')
for app in plugins/python-*/app.py tests/plugins/python-*/app.py; do
    [[ -f $app ]] || continue
    dir=$(basename "$(dirname "$app")")
    wasm="$out/${dir//-/_}.wasm"
    if stale "$wasm" "$(dirname "$app")"/*.py $sdk_sources; then
        .venv/bin/bizon-plugin build "$app" -o "$wasm" --no-check >/dev/null
        printf '%8d KiB  %s\n' "$(( $(stat -c %s "$wasm") / 1024 ))" "$wasm"
    fi
done

# @bizon/plugin runs with the componentize-js that install-componentize.sh
# put in .tools/js (rolldown comes with it) and apache-arrow added there;
# published, it declares them.
for wit in destination.wit transform.wit; do
    if ! cmp -s "wit/$wit" "sdk/js/wit/$wit"; then
        echo "sdk/js/wit/$wit differs from wit/$wit" >&2
        exit 1
    fi
done
for wit in sdk/js/wit/deps/*.wit; do
    if ! cmp -s "$wit" "sdk/python/src/bizon_plugin/wit/deps/$(basename "$wit")"; then
        echo "$wit differs from the WASI copy in sdk/python/src/bizon_plugin/wit/deps" >&2
        exit 1
    fi
done
# apache-arrow, for @bizon/plugin/arrow (bundled into the plugins that use it).
if [[ ! -f .tools/js/node_modules/apache-arrow/package.json ]]; then
    (cd .tools/js && npm install --silent --no-audit --no-fund apache-arrow@21.2.0 >/dev/null)
fi
[[ -e sdk/js/node_modules ]] || ln -s ../../.tools/js/node_modules sdk/js/node_modules
for example in plugins/js-summary/app.js plugins/js-jsonl/app.js plugins/js-flatten/app.js plugins/js-webhook/app.js; do
    if [[ "$(cat docs/sdk-js.md)" != *"$(cat "$example")"* ]]; then
        echo "docs/sdk-js.md no longer shows $example" >&2
        exit 1
    fi
done
out=target/wasm/js
mkdir -p "$out"
js_sources=$(find sdk/js/src sdk/js/bin sdk/js/wit -name "*.js" -o -name "*.wit")
for app in plugins/js-*/app.js tests/plugins/js-*/app.js; do
    [[ -f $app ]] || continue
    dir=$(basename "$(dirname "$app")")
    wasm="$out/${dir//-/_}.wasm"
    if stale "$wasm" "$(dirname "$app")"/*.js $js_sources; then
        node sdk/js/bin/bizon-plugin.js build "$app" -o "$wasm" --no-check >/dev/null
        printf '%8d KiB  %s\n' "$(( $(stat -c %s "$wasm") / 1024 ))" "$wasm"
    fi
done
