#!/usr/bin/env bash
# Build every WebAssembly guest (the SDK, the first-party plugins, the test
# plugins) as wasm32-wasip2 components, in their own target dir so a guest
# build never waits on the native host build's cargo lock.
set -euo pipefail
cd "$(dirname "$0")/.."
# The guests' target: a fresh machine has only the host's.
rustup target add wasm32-wasip2 >/dev/null

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

# First-party guests (the SDK, plugins/) and the test guests (tests/plugins,
# hostile on purpose): the first are linted when CI makes clippy the
# workspace's compiler (.ci/run), the second never.
first_party=(-p bizon-sdk)
test_guests=()
components=()
for manifest in plugins/*/Cargo.toml tests/plugins/*/Cargo.toml; do
    [[ -f $manifest ]] || continue
    name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)
    case $manifest in
        plugins/*) first_party+=(-p "$name") ;;
        *) test_guests+=(-p "$name") ;;
    esac
    components+=("target/wasm/wasm32-wasip2/release/${name//-/_}.wasm")
done

# The workspace release profile keeps line tables for the native host; in a
# component they are 90% of the file, and wasmtime does not use them. Function
# names stay, so a trap still says where it happened.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo
cargo build --release --target wasm32-wasip2 --target-dir target/wasm "${first_party[@]}"
env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
    cargo build --release --target wasm32-wasip2 --target-dir target/wasm "${test_guests[@]}"

for wasm in "${components[@]}"; do
    printf '%8d KiB  %s\n' "$(( $(stat -c %s "$wasm") / 1024 ))" "$wasm"
done

# Python (and JavaScript) plugins built with the SDKs under sdk/.
bash scripts/build-sdk-plugins.sh
