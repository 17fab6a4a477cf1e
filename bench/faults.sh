#!/usr/bin/env bash
# The long forms of the fault tests (not CI, which runs a 10 s broker outage
# and 4 s warehouse outages): the only broker (tansu on s3:// over moto,
# docs/kafka.md "Tests") SIGKILLed mid-run and started again after OUTAGE_S
# seconds (90 by default), under `run` and under `serve`; then bqemulator
# (Storage Write and load-job runs) and clickhouse-server SIGKILLed and
# restarted, and GCS answering 500 and 429, for WAREHOUSE_S seconds (60 by
# default). Each test fails on a lost record and prints what it measured
# (rows, messages sent, duplicates).
#   bash bench/faults.sh [OUTAGE_S [WAREHOUSE_S]]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-kafka.sh
bash scripts/install-moto.sh
bash scripts/install-emulators.sh
bash scripts/install-clickhouse.sh
export BIZON_BROKER_OUTAGE_S="${1:-90}" BIZON_WAREHOUSE_OUTAGE_S="${2:-60}"
# One at a time: two outages at once would share the machine's two cores
# with two brokers and two S3 servers.
nice -n 10 cargo test --release -p bizon-host --test e2e -- faults::broker faults::warehouse --test-threads 1 --nocapture
