#!/usr/bin/env bash
# Transform figures (docs/transforms.md), each the run's own `duration_s` from
# --result-json, through the release binary:
#   1. N `dummy` records to `file`: no transform, then Bizon's one-line Python
#      transform `data['name'] = data['name'].upper()` (the Python runtime),
#      then the same transform exec'd per record by Bizon 0.6.4 (bench/bizon,
#      whole process, BENCH_YML=bench_transform.yml).
#   2. N Kafka-shaped records (Bizon's wrapper around a ~100-byte value) from a
#      `jsonl` file to `file`: no transform, the Rust kafka-flatten component,
#      the same flatten as Bizon's Python transform, and as components built
#      with the Python and JavaScript SDKs (plugins/python-flatten, js-flatten).
#   bash bench/transforms.sh [N]      (default 1000000; SKIP_BIZON=1 skips Bizon)
# Each line also gives the run's CPU seconds, and the load average is printed
# before and after: the machine is shared, wall time alone misleads.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
bash scripts/build-transform-runtime.sh
bash scripts/build-plugins.sh >/dev/null
cargo build -q --release -p bizon-host
bin="$PWD/target/release/bizon-host"
flatten="$PWD/target/wasm/wasm32-wasip2/release/bizon_kafka_flatten.wasm"
py_flatten="$PWD/target/wasm/python/python_flatten.wasm"
js_flatten="$PWD/target/wasm/js/js_flatten.wasm"
work="$(mktemp -d)"
export BIZON_HOST_CACHE_DIR="$work/cache"

# One run: prints "<label> records=N seconds=S records_per_s=R cpu_s=C", C
# being the process's user + system CPU seconds (2 cores: up to 2x seconds).
run() {
    local label="$1" yaml="$2"
    printf '%s' "$yaml" > "$work/p.yaml"
    rm -f "$work"/out*.json
    python3 - "$label" "$work" "$bin" <<'PY'
import json, resource, subprocess, sys
label, work, bin = sys.argv[1:]
subprocess.run([bin, "run", "p.yaml", "--no-progress", "--result-json", "r.json", "--log-level", "warn"], cwd=work, check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
r = json.load(open(f"{work}/r.json"))
assert r["status"] == "success", r
print(f'{label} records={r["records_written"]} seconds={r["duration_s"]:.2f} records_per_s={r["records_written"] / r["duration_s"]:.0f} cpu_s={usage.ru_utime + usage.ru_stime:.2f}')
PY
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
trap 'echo "load average after: $(cut -d" " -f1-3 /proc/loadavg)"; rm -rf "$work"' EXIT

dummy="name: bench\nsource:\n  name: dummy\n  total_records: $n\ndestination:\n  name: file\n  config:\n    destination_id: out\n"
upper="transforms:\n  - label: upper\n    python: data['name'] = data['name'].upper()\n"
# A first run fills the compile cache, so the figures are warm runs.
run warmup "$(printf "$dummy$upper" | sed "s/total_records: $n/total_records: 1000/")" >/dev/null
run "dummy, no transform         " "$(printf "$dummy")"
run "dummy, Python one-liner     " "$(printf "$dummy$upper")"
if [[ "${SKIP_BIZON:-0}" != 1 ]]; then
    bash bench/bizon/setup.sh
    echo "Bizon 0.6.4, same transform: $(BENCH_YML="$PWD/bench/bizon/bench_transform.yml" bash bench/bizon/run.sh "$n" | grep '^bizon ')"
fi

# N records, and 1,000 of the same to warm each component's compile cache.
python3 - "$n" "$work/kafka.jsonl" "$work/warmup.jsonl" <<'PY'
import json, sys
for path, n in ((sys.argv[2], int(sys.argv[1])), (sys.argv[3], min(int(sys.argv[1]), 1000))):
    with open(path, "w") as f:
        for i in range(n):
            value = {"user_id": i, "email": f"user{i}@example.com", "score": i * 0.5, "active": i % 2 == 0}
            f.write(json.dumps({"topic": "users", "offset": i // 4, "partition": i % 4, "timestamp": "2026-11-25 10:00:00.000000",
                                "keys": {"id": i}, "headers": {}, "value": value, "schema": ""}) + "\n")
PY
jsonl="name: bench\nsource:\n  name: jsonl\n  path: $work/kafka.jsonl\ndestination:\n  name: file\n  config:\n    destination_id: out\n"
rust="transforms:\n  - label: flatten\n    wasm: $flatten\n"
python="transforms:\n  - label: flatten\n    python: |\n      data = {**data['value'], '__kafka_offset': data['offset'], '__kafka_partition': data['partition'], '__kafka_topic': data['topic'], '__kafka_timestamp': data['timestamp']}\n"
py_sdk="transforms:\n  - label: flatten\n    wasm: $py_flatten\n"
js_sdk="transforms:\n  - label: flatten\n    wasm: $js_flatten\n"
for t in "$rust" "$py_sdk" "$js_sdk"; do
    run warmup "$(printf "$jsonl$t" | sed "s#kafka.jsonl#warmup.jsonl#")" >/dev/null
done
run "kafka-shaped, no transform      " "$(printf "$jsonl")"
run "kafka-shaped, Rust flatten      " "$(printf "$jsonl$rust")"
run "kafka-shaped, Python flatten    " "$(printf "$jsonl$python")"
run "kafka-shaped, Python SDK flatten" "$(printf "$jsonl$py_sdk")"
run "kafka-shaped, JS SDK flatten    " "$(printf "$jsonl$js_sdk")"
