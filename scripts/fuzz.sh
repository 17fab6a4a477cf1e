#!/usr/bin/env bash
# The property tests of tests/e2e/fuzz.rs (the pipeline YAML loader, the
# Kafka JSON and Avro decoders with registry answers, the jsonl source's
# lines, what plugins hand back, serve's API request bodies),
# each run for MINUTES minutes (10 by default) in rounds of CASES cases
# (10000 by default), every round on a new random seed. CI runs a few
# hundred cases of each. A failure stops the script; proptest writes its
# seed under tests/proptest-regressions/ (replayed first from then on): make
# it a named regression test beside its property, and fix the host.
# FUZZ_PROFILE=dev runs the dev build instead of the release one;
# FUZZ_ONLY (an extended regex, e.g. 'fuzz::(yaml|jsonl)::') keeps the
# properties it matches.
#   bash scripts/fuzz.sh [MINUTES [CASES]]     (MINUTES may be a fraction)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=$(awk "BEGIN { print int(${1:-10} * 60) }")
export PROPTEST_CASES="${2:-10000}"
profile=(--release)
[[ ${FUZZ_PROFILE:-release} == dev ]] && profile=()
nice -n 10 cargo test "${profile[@]}" -p bizon-host --test e2e --no-run
properties=$(cargo test "${profile[@]}" -p bizon-host --test e2e -- --list 2>/dev/null |
    sed -n 's/^\(fuzz::[a-z0-9_:]*\): test$/\1/p' | grep -E "${FUZZ_ONLY:-.}")
for property in $properties; do
    end=$((SECONDS + seconds))
    rounds=0
    while ((SECONDS < end)); do
        nice -n 10 cargo test "${profile[@]}" -q -p bizon-host --test e2e -- "$property" --exact >/dev/null 2>/tmp/bizon-fuzz.$$ || {
            cat /tmp/bizon-fuzz.$$ >&2
            echo "$property failed after $rounds rounds of $PROPTEST_CASES cases" >&2
            exit 1
        }
        rounds=$((rounds + 1))
    done
    echo "$property: $rounds rounds of $PROPTEST_CASES cases, no failure"
done
rm -f /tmp/bizon-fuzz.$$
