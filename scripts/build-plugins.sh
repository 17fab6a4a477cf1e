#!/usr/bin/env bash
# Build every WebAssembly guest (the SDK, the first-party plugins, the test
# plugins) as wasm32-wasip2 components, in their own target dir so a guest
# build never waits on the native host build's cargo lock.
set -euo pipefail
cd "$(dirname "$0")/.."

# The SDK carries its own copy of the WIT so it builds from a git or registry
# dependency too; the copy must never drift from the canonical contract.
for wit in destination transform; do
    if ! cmp -s "wit/$wit.wit" "sdk/wit/$wit.wit"; then
        echo "sdk/wit/$wit.wit differs from wit/$wit.wit; run: cp wit/$wit.wit sdk/wit/" >&2
        exit 1
    fi
done

# docs/sdk.md shows tests/plugins/my-dest and tests/plugins/webhook verbatim;
# this build proves they compile.
for example in my-dest webhook; do
    if [[ "$(cat docs/sdk.md)" != *"$(cat tests/plugins/$example/src/lib.rs)"* ]]; then
        echo "docs/sdk.md no longer shows tests/plugins/$example/src/lib.rs" >&2
        exit 1
    fi
done

packages=(-p bizon-sdk)
components=()
for manifest in plugins/*/Cargo.toml tests/plugins/*/Cargo.toml; do
    [[ -f $manifest ]] || continue
    name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)
    packages+=(-p "$name")
    components+=("target/wasm/wasm32-wasip2/release/${name//-/_}.wasm")
done

# The workspace release profile keeps line tables for the native host; in a
# component they are 90% of the file, and wasmtime does not use them. Function
# names stay, so a trap still says where it happened.
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --target wasm32-wasip2 --target-dir target/wasm "${packages[@]}"

for wasm in "${components[@]}"; do
    printf '%8d KiB  %s\n' "$(( $(stat -c %s "$wasm") / 1024 ))" "$wasm"
done
