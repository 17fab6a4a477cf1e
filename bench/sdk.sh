#!/usr/bin/env bash
# Python plugins end to end, and the same work in Rust and Python side by side.
#   bash bench/sdk.sh [N]    (N records for the Python run; default 1000000)
# 1. `dummy` N records -> the python-jsonl plugin (Arrow, source_data as it
#    came) and the same with `fields` (every record parsed and re-encoded):
#    records/s from the run's own duration_s, peak RSS.
# 2. 100,000 records through tests/plugins/my-dest (Rust), python-jsonl
#    (Python), js-jsonl (JavaScript, NDJSON) and tests/plugins/js-arrow
#    (JavaScript, Arrow), each appending each record's JSON to one file, and
#    js-summary (JavaScript: parses each record and sums a field): component size,
#    compile (`plugin compile`, empty cache), first run (cold cache, whole
#    process), warm run (whole process), records/s of the warm run, peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
bash scripts/build-plugins.sh >/dev/null
cargo build -q --release -p bizon-host
bin="$PWD/target/release/bizon-host"
rust="$PWD/target/wasm/wasm32-wasip2/release/my_dest.wasm"
python="$PWD/target/wasm/python/python_jsonl.wasm"
js="$PWD/target/wasm/js/js_summary.wasm"
js_jsonl="$PWD/target/wasm/js/js_jsonl.wasm"
js_arrow="$PWD/target/wasm/js/js_arrow.wasm"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BIZON_HOST_CACHE_DIR="$work/cache"

# run NAME TOTAL PLUGIN PLUGIN_CONFIG [BUFFER_MB]: one run, prints "wall_s records_per_s peak_rss_mb"
run() {
    local dir="$work/$1"
    rm -rf "$dir" && mkdir -p "$dir/out"
    cat > "$dir/p.yaml" <<YAML
name: bench
source: {name: dummy, total_records: $2}
destination:
  name: wasm
  config:
    plugin: $3
    plugin_config: $4
    buffer_size: ${5:-50}
    allow:
      dirs: [{host: $dir/out, guest: /out, writable: true}]
YAML
    local start end
    start=$(date +%s.%N)
    "$bin" run "$dir/p.yaml" --result-json "$dir/r.json" --no-progress 2>"$dir/log" || { cat "$dir/log" >&2; exit 1; }
    end=$(date +%s.%N)
    python3 - "$dir/r.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"{wall:.2f} {r['records_written'] / r['duration_s']:.0f} {r['peak_rss_bytes'] / 2**20:.0f}")
PY
}

echo "## dummy $n records -> python_jsonl.wasm (Arrow), default buffer_size 50 MB"
"$bin" plugin compile "$python" >/dev/null
for mode in "source_data as it came:{dir: /out}" "every record parsed:{dir: /out, fields: [id, name, age]}"; do
    read -r wall rps rss < <(run py "$n" "$python" "${mode#*:}")
    printf '%-24s %10s records/s  (whole process %s s, peak RSS %s MB)\n' "${mode%%:*}" "$rps" "$wall" "$rss"
done

echo
echo "## 100,000 records, one file; sizes in MB, times in s"
printf '| plugin | size MB | compile s | first run s | warm run s | records/s | RSS MB |\n|---|---|---|---|---|---|---|\n'
for row in "Rust my-dest:$rust:{path: /out/records.jsonl}" "Python python-jsonl:$python:{dir: /out}" \
    "JavaScript js-jsonl (NDJSON, buffer_size 10):$js_jsonl:{dir: /out}" \
    "JavaScript js-arrow (Arrow, buffer_size 10):$js_arrow:{}" \
    "JavaScript js-summary (buffer_size 10):$js:{sum: id}"; do
    IFS=: read -r label wasm config <<<"$row"
    buffer=50
    [[ $label == JavaScript* ]] && buffer=10  # docs/sdk-js.md: StarlingMonkey's heap cap
    rm -rf "$BIZON_HOST_CACHE_DIR"
    compile=$("$bin" plugin compile "$wasm" | sed -n 's/.*compiled in \([0-9.]*\) ms.*/\1/p')
    rm -rf "$BIZON_HOST_CACHE_DIR"
    read -r first _ _ < <(run first 100000 "$wasm" "$config" "$buffer")
    read -r warm _ rss < <(run warm 100000 "$wasm" "$config" "$buffer")
    size=$(python3 -c "import os; print(f'{os.path.getsize(\"$wasm\") / 1e6:.1f}')")
    rps=$(python3 -c "print(f'{100000 / $warm / 1000:.0f}k')")
    printf '| %s | %s | %.2f | %s | %s | %s | %s |\n' "$label" "$size" "$(python3 -c "print($compile / 1000)")" "$first" "$warm" "$rps" "$rss"
done
