#!/usr/bin/env bash
# The test step (after the install step, scripts/install.sh): builds the
# WebAssembly plugins (Rust, Python, JavaScript) and the Python transform
# runtime, runs the Python and JavaScript SDKs' own tests, then every test of
# the host: its unit tests and the end-to-end tests (tests/e2e, one binary)
# of the binary against real plugins, emulators, broker, database and
# browser. A test whose tool is missing fails, naming the script that
# installs it. Extra arguments go to `cargo test`:
#
#     bash scripts/test.sh --test e2e kafka::     # one suite
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-plugins.sh >/dev/null
# The Python transform runtime (target/wasm/python-transform.wasm; ~10 s, once).
bash scripts/build-transform-runtime.sh
# The Python SDK's own tests, in plain CPython (scripts/build-sdk-plugins.sh,
# called by build-plugins.sh above, installed it and pytest into .venv).
# Plugin autoload off: other packages in .venv (bqemulator) register pytest
# plugins with imports of their own.
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 .venv/bin/python -m pytest -q -p no:cacheprovider sdk/python/tests
# The JavaScript SDK's own tests, in Node.
node --test sdk/js/test/
# Release: wasmtime compiles plugins many times faster optimized, and the
# end-to-end tests start the binary hundreds of times. Four tests at a time
# on 2 cores: most of them wait (on brokers, emulators, timeouts, child
# processes); the e2e binary took 188 s so, 314 s at the default of 2, on
# the same machine under other load (caches warm, load average 6-10).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo test --release --workspace "$@"
# Every shell block of README.md and docs/*.md, run as a reader types it
# (scripts/doc-runner; 20 blocks from 7 pages in 2-2.5 min here), with the
# release binary the tests above built. First its self-check: a documented
# flag broken in a copy of README.md must fail naming the page and line.
# Only on a whole run: arguments choose one suite.
if [ $# -eq 0 ]; then
    export BIZON_HOST_BIN="${CARGO_TARGET_DIR:-target}/release/bizon-host"
    python3 scripts/doc-runner --self-check
    python3 scripts/doc-runner
fi
