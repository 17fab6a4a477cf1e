#!/usr/bin/env bash
# Builds the Python transform runtime (transforms/python/app.py, world
# `transformer` of wit/) into a CPython WebAssembly component with
# componentize-py: target/wasm/python-transform.wasm (or
# $CARGO_TARGET_DIR/wasm/). bizon-host finds it next to its binary, in
# ../wasm/ from it, or at $BIZON_HOST_PYTHON_TRANSFORM (docs/transforms.md).
# The pure-Python packages of transforms/python/requirements.txt (dates and
# time zones, as Bizon's environment has them) are installed beside it in
# python-transform-site/ and bundled.
# Idempotent: skips the build (~20 s, ~400 MB) when the component is newer than
# its sources.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out_dir="${CARGO_TARGET_DIR:-$root/target}/wasm"
out="$out_dir/python-transform.wasm"
site="$out_dir/python-transform-site"
sources=("$root"/transforms/python/*.py "$root/transforms/python/requirements.txt" "$root/wit/transform.wit" "$root/wit/destination.wit")
if [ -f "$out" ]; then
  stale=0
  for s in "${sources[@]}"; do [ "$s" -nt "$out" ] && stale=1; done
  [ "$stale" = 0 ] && exit 0
fi
bash "$root/scripts/install-componentize.sh"
mkdir -p "$out_dir"
rm -rf "$site"
"$root/.venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --target "$site" \
  -r "$root/transforms/python/requirements.txt"
"$root/.venv/bin/componentize-py" -d "$root/wit" -w transformer componentize app \
  -p "$root/transforms/python" -p "$site" -o "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
