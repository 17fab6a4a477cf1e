#!/usr/bin/env bash
# The install step: what the tests start or build with, each at the version
# the tests were written against. Each script installs what is missing (or,
# for the Python and npm tools, of another version) and fails naming what it
# could not fix. Idempotent: about a second when everything is there.
# scripts/test.sh is the test step.
set -euo pipefail
cd "$(dirname "$0")/.."
# The target of the WebAssembly guests (scripts/build-plugins.sh).
rustup target add wasm32-wasip2 >/dev/null 2>&1
# BigQuery and GCS emulators (.venv): the BigQuery and Kafka-to-BigQuery tests.
bash scripts/install-emulators.sh
# The tansu Kafka broker (.venv): the Kafka, serve and transform tests.
bash scripts/install-kafka.sh
# moto's S3 server (.venv): durable storage for the broker the fault tests kill.
bash scripts/install-moto.sh
# clickhouse-server (Debian's): the ClickHouse plugin's test.
bash scripts/install-clickhouse.sh
# PostgreSQL (Debian's): the test of several `serve` hosts on one registry.
bash scripts/install-postgres.sh
# Headless Chromium (Debian's, ~1 min once): the `serve` operator page test.
bash scripts/install-chromium.sh
# componentize-py / componentize-js: Python and JavaScript plugins and transforms.
bash scripts/install-componentize.sh
# Bizon 0.6.4 (.venv-bizon): the bridge's tests run Bizon's own sources with it.
bash scripts/install-bizon.sh
