#!/usr/bin/env bash
# bizon-host with the bridge against Bizon 0.6.4 on the same custom source
# (bench/bizon/bench_source.py through `source_file_path`, N records in pages
# of 1,000) into the `file` destination, same Python, same machine, back to
# back. Checks that both wrote N records with the same source_data, prints one
# line each and the ratio of their wall times (each run's whole process:
# interpreter start-up, imports, Bizon's 2 s consumer start delay for Bizon)
# and of their CPU times (bizon-host's: the host and its Python child).
#   bash bench/bridge.sh [N]      (default 500000)
# BIZON_HOST: the binary (default $CARGO_TARGET_DIR/release/bizon-host, or
# target/release/bizon-host, built if missing).
# ROUNDS=k: k rounds, alternating which runs first; the median ratio is printed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-500000}"
rounds="${ROUNDS:-1}"
bash "$root/scripts/install-bizon.sh"
python="$root/.venv-bizon/bin/python"
host="${BIZON_HOST:-${CARGO_TARGET_DIR:-$root/target}/release/bizon-host}"
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

# Runs one side in a fresh directory; prints "WALL CPU PEAK_RSS_MB" (CPU: user + system seconds of
# the whole process tree, which a loaded machine changes less than the wall time).
run() {
  local side="$1" dir="$work/$1"
  rm -rf "$dir" && mkdir -p "$dir" && cp "$work/pipeline.yaml" "$dir/"
  local cmd
  if [[ "$side" == bizon ]]; then
    cmd=("$root/.venv-bizon/bin/bizon" run pipeline.yaml)
  else
    cmd=("$host" --python "$python" run pipeline.yaml --no-progress)
  fi
  python3 - "$dir" "${cmd[@]}" <<'PY' || { echo "$side failed:" >&2; tail -n 20 "$dir/log" >&2; exit 1; }
import resource, subprocess, sys, time
directory, command = sys.argv[1], sys.argv[2:]
with open(f"{directory}/log", "wb") as log:
    start = time.perf_counter()
    code = subprocess.call(command, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f} {usage.ru_utime + usage.ru_stime:.3f} {usage.ru_maxrss / 1024:.0f}")
sys.exit(code)
PY
}

ratios=()
for ((i = 0; i < rounds; i++)); do
  if ((i % 2 == 0)); then
    read -r theirs theirs_cpu theirs_rss < <(run bizon)
    read -r ours ours_cpu ours_rss < <(run bizon-host)
  else
    read -r ours ours_cpu ours_rss < <(run bizon-host)
    read -r theirs theirs_cpu theirs_rss < <(run bizon)
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
  echo "bizon      records=$n seconds=$theirs cpu_s=$theirs_cpu peak_rss_mb=$theirs_rss records_per_s=$(python3 -c "print(round($n / $theirs))")"
  echo "bizon-host records=$n seconds=$ours cpu_s=$ours_cpu peak_rss_mb=$ours_rss records_per_s=$(python3 -c "print(round($n / $ours))") ratio=${ratio}x cpu_ratio=$(python3 -c "print(f'{$theirs_cpu / $ours_cpu:.2f}')")x"
  ratios+=("$ratio")
done
if ((rounds > 1)); then
  python3 -c "import statistics, sys; print(f'median ratio over {len(sys.argv) - 1} rounds: {statistics.median(map(float, sys.argv[1:])):.2f}x')" "${ratios[@]}"
fi
