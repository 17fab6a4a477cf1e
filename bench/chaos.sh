#!/usr/bin/env bash
# Exactly-once through crashes, counted: a producer keeps writing while a
# stream-mode Kafka pipeline is SIGKILLed at random moments and restarted
# (each time only after it made progress), then drained. Prints, for each
# destination, messages produced, rows published, duplicates, lost, and the
# replays the last run recognised. Not a timed test: the counts are the
# result (they must be 0 duplicates, 0 lost).
#
#     bash bench/chaos.sh            # 20 kills (file), 20 (Storage Write on bqemulator)
#     KILLS=6 bash bench/chaos.sh
#
# Needs what the tests need (bash scripts/install.sh): tansu, bqemulator,
# clickhouse-server (plugins/clickhouse with exactly_once: true).
set -euo pipefail
cd "$(dirname "$0")/.."
export BIZON_CHAOS_KILLS="${KILLS:-20}"
cargo test --release --test e2e -- --nocapture --test-threads 1 kafka::chaos:: 2>&1 | grep -E '^chaos: (Kafka|ClickHouse)|test result|FAILED|panicked'
