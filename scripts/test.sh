#!/usr/bin/env bash
# The test command: builds the WebAssembly plugins (Rust, Python, JavaScript)
# and the Python transform runtime, installs on first use what the tests start
# (BigQuery and GCS emulators and the tansu Kafka broker in .venv,
# clickhouse-server, postgresql and chromium from Debian, componentize-py/-js), runs the
# Python and JavaScript SDKs' own tests, then every test of the host (unit
# tests and end-to-end tests of the binary against real plugins, emulators,
# broker and browser). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
bash scripts/build-plugins.sh >/dev/null
if [[ -f scripts/install-emulators.sh ]]; then
    bash scripts/install-emulators.sh
fi
# The tansu Kafka broker the kafka tests start (seconds; nothing when present).
bash scripts/install-kafka.sh
# The ClickHouse plugin's test starts a real clickhouse-server.
bash scripts/install-clickhouse.sh
# PostgreSQL: the `serve` several-hosts test starts a private cluster (Debian's, once).
bash scripts/install-postgres.sh
# Headless Chromium: the `serve` operator page test (Debian's chromium, ~1 min once).
bash scripts/install-chromium.sh
# componentize-py / componentize-js: Python and JS plugins and transforms.
bash scripts/install-componentize.sh
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
# end-to-end tests start the binary hundreds of times.
cargo test --release --workspace "$@"
