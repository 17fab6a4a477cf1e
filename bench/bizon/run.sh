#!/usr/bin/env bash
# Baseline: run Bizon 0.6.4 on N synthetic records (bench_source.py -> file destination, bench.yml)
# and print ONE final line:
#   bizon records=N seconds=S records_per_s=R peak_rss_mb=M
# seconds = wall time of the whole `bizon run` process (interpreter start-up, sqlite backend,
# 2 s consumer_start_delay of Bizon's thread runner and finalize included).
# Usage: bench/bizon/run.sh [N]   (default N=1000000). Set KEEP=1 to keep the temp dir,
# BENCH_YML to run another pipeline file (bench_transform.yml: the same with a one-line transform).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N="${1:-1000000}"

"$HERE/setup.sh"

WORK="$(mktemp -d -t bizon-bench.XXXXXX)"
cleanup() { if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

# bench.yml reads N through Bizon's own env:// resolver.
export BIZON_BENCH_N="$N"
# Keep the .env lookup of `bizon run` (find_dotenv) from picking up a stray .env.
cd "$WORK"

res="$("$HERE/.venv/bin/python" "$HERE/run_bizon.py" "$WORK" \
    "$HERE/.venv/bin/bizon" run "${BENCH_YML:-$HERE/bench.yml}" --custom-source "$HERE/bench_source.py")"

rc="$(sed -E 's/.* rc=([0-9-]+).*/\1/' <<<"$res")"
secs="$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$res")"
rss="$(sed -E 's/.*peak_rss_mb=([0-9.]+).*/\1/' <<<"$res")"

out="$WORK/bench_out.json"
if [[ "$rc" != 0 || ! -f "$out" ]]; then
    echo "bizon run failed (rc=$rc); last log lines:" >&2
    tail -n 30 "$WORK/bizon.log" >&2
    exit 1
fi
lines="$(wc -l < "$out")"
if [[ "$lines" != "$N" ]]; then
    echo "output has $lines lines, expected $N; last log lines:" >&2
    tail -n 30 "$WORK/bizon.log" >&2
    exit 1
fi

rps="$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
echo "bizon records=$N seconds=$secs records_per_s=$rps peak_rss_mb=$rss"
