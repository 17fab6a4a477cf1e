#!/usr/bin/env bash
# Builds the Python plugins (plugins/python-*/app.py, tests/plugins/python-*/app.py)
# with the repository's bizon-plugin SDK into target/wasm/python/<dir>.wasm
# (python-jsonl -> python_jsonl.wasm). Installs componentize-py and the SDK
# (editable, with pytest) into .venv on first use. A component newer than its
# sources is left alone, so a second run takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-componentize.sh
if [[ ! -x .venv/bin/bizon-plugin || ! -x .venv/bin/pytest ]]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -e 'sdk/python[test]'
fi

# The SDK carries its own copy of the WIT, like the Rust SDK.
if ! cmp -s wit/destination.wit sdk/python/src/bizon_plugin/wit/destination.wit; then
    echo "sdk/python/src/bizon_plugin/wit/destination.wit differs from wit/destination.wit" >&2
    exit 1
fi
# docs/sdk-python.md shows these verbatim; the build proves they build.
for example in tests/plugins/python-mydest/app.py plugins/python-jsonl/app.py plugins/python-webhook/app.py; do
    if [[ "$(cat docs/sdk-python.md)" != *"$(cat "$example")"* ]]; then
        echo "docs/sdk-python.md no longer shows $example" >&2
        exit 1
    fi
done

out=target/wasm/python
mkdir -p "$out"
sdk_sources=$(find sdk/python/src -name '*.py' -o -name '*.wit')
for app in plugins/python-*/app.py tests/plugins/python-*/app.py; do
    [[ -f $app ]] || continue
    dir=$(basename "$(dirname "$app")")
    wasm="$out/${dir//-/_}.wasm"
    stale=0
    [[ -f $wasm ]] || stale=1
    for source in "$(dirname "$app")"/*.py $sdk_sources; do
        [[ $source -nt $wasm ]] && stale=1
    done
    if (( stale )); then
        .venv/bin/bizon-plugin build "$app" -o "$wasm" --no-check >/dev/null
        printf '%8d KiB  %s\n' "$(( $(stat -c %s "$wasm") / 1024 ))" "$wasm"
    fi
done
