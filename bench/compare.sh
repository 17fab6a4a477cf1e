#!/usr/bin/env bash
# bizon-host against Bizon 0.6.4 on the same work: N dummy-like records to
# NDJSON files with default buffer settings. Prints both lines and the ratio.
#   bash bench/compare.sh [N]     (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"

ours=$(BENCH_RECORDS="$n" cargo bench -q -p bizon-host --no-default-features --bench pipeline 2>/dev/null | grep '^bizon-host ')
bash bench/bizon/setup.sh
theirs=$(bash bench/bizon/run.sh "$n" | grep '^bizon ')

echo "$ours"
echo "$theirs"
rate() { sed -E 's/.*records_per_s=([0-9.]+).*/\1/' <<<"$1"; }
python3 -c "print(f'ratio: bizon-host is {float($(rate "$ours")) / float($(rate "$theirs")):.1f}x Bizon (records/s, median of bizon-host runs vs one Bizon run)')"
