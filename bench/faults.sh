#!/usr/bin/env bash
# The long forms of the fault tests (not CI, which runs a 10 s outage): the
# only broker (tansu on s3:// over moto, docs/kafka.md "Tests") SIGKILLed
# mid-run and started again after OUTAGE_S seconds (90 by default), under
# `run` and under `serve`; each test fails on a lost message and prints what
# it measured (rows, messages sent, duplicates).
#   bash bench/faults.sh [OUTAGE_S]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-kafka.sh
bash scripts/install-moto.sh
export BIZON_BROKER_OUTAGE_S="${1:-90}"
# One at a time: two outages at once would share the machine's two cores
# with two brokers and two S3 servers.
nice -n 10 cargo test --release -p bizon-host --test e2e -- faults::broker --test-threads 1 --nocapture
