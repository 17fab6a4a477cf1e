#!/usr/bin/env bash
# bizon-host with the bridge against Bizon 0.6.4 on the same custom source
# (bench/bizon/bench_source.py through `source_file_path`, N records in pages
# of 1,000) into the `file` destination, same Python, same machine, back to
# back. Checks that both wrote N records with the same source_data, prints one
# line each and the ratio of their wall times (each run's whole process:
# interpreter start-up, imports, Bizon's 2 s consumer start delay for Bizon).
#   bash bench/bridge.sh [N]      (default 500000)
# BIZON_HOST: the binary (default target/release/bizon-host, built if missing).
# ROUNDS=k: k rounds, alternating which runs first; the median ratio is printed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-500000}"
rounds="${ROUNDS:-1}"
bash "$root/scripts/install-bizon.sh"
python="$root/.venv-bizon/bin/python"
host="${BIZON_HOST:-$root/target/release/bizon-host}"
if [[ ! -x "$host" ]]; then
  (cd "$root" && cargo build --release --bin bizon-host)
fi

work="$(mktemp -d -t bizon-bridge.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cat > "$work/pipeline.yaml" <<YAML
name: bridge-bench
source:
  name: bench
  stream: records
  source_file_path: $root/bench/bizon/bench_source.py
  num_records: $n
  page_size: 1000
destination:
  name: file
  config:
    destination_id: bench_out
YAML

# Runs one side in a fresh directory; prints its wall time in seconds.
run() {
  local side="$1" dir="$work/$1"
  rm -rf "$dir" && mkdir -p "$dir" && cp "$work/pipeline.yaml" "$dir/"
  local start end
  start=$(date +%s.%N)
  if [[ "$side" == bizon ]]; then
    (cd "$dir" && "$root/.venv-bizon/bin/bizon" run pipeline.yaml >"$dir/log" 2>&1)
  else
    (cd "$dir" && "$host" --python "$python" run pipeline.yaml --no-progress >"$dir/log" 2>&1)
  fi || { echo "$side failed:" >&2; tail -n 20 "$dir/log" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}

ratios=()
for ((i = 0; i < rounds; i++)); do
  if ((i % 2 == 0)); then
    theirs=$(run bizon); ours=$(run bizon-host)
  else
    ours=$(run bizon-host); theirs=$(run bizon)
  fi
  # Same records: every source_record_id once, its source_data as Bizon wrote it.
  "$python" - "$work/bizon/bench_out.json" "$work/bizon-host/bench_out.json" "$n" <<'PY'
import sys
import orjson
def load(path):
    records = {}
    with open(path, "rb") as f:
        for line in f:
            row = orjson.loads(line)
            records[row["source_record_id"]] = row["source_data"]
    return records
bizon, host, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
assert len(bizon) == n, f"Bizon wrote {len(bizon)} records, not {n}"
assert host == bizon, f"bizon-host's records differ from Bizon's ({len(host)} against {len(bizon)})"
PY
  ratio=$(python3 -c "print(f'{$theirs / $ours:.2f}')")
  echo "bizon      records=$n seconds=$theirs records_per_s=$(python3 -c "print(round($n / $theirs))")"
  echo "bizon-host records=$n seconds=$ours records_per_s=$(python3 -c "print(round($n / $ours))") ratio=${ratio}x"
  ratios+=("$ratio")
done
if ((rounds > 1)); then
  python3 -c "import statistics, sys; print(f'median ratio over {len(sys.argv) - 1} rounds: {statistics.median(map(float, sys.argv[1:])):.2f}x')" "${ratios[@]}"
fi
