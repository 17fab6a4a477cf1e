#!/usr/bin/env bash
# plugins/clickhouse against the native `file` destination on the same work:
# N dummy records over 3 destination_ids, decoded with `unnest` into the
# record_schema, written to a local clickhouse-server (started here on free
# ports, in a temporary directory) and to JSON files. Prints records/s from
# each run's `duration_s` and checks ClickHouse's count per table.
#   bash bench/clickhouse.sh [N]     (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
bash scripts/install-clickhouse.sh
bash scripts/build-plugins.sh >/dev/null
cargo build -q --release -p bizon-host
bin="$PWD/target/release/bizon-host"
plugin="$PWD/target/wasm/wasm32-wasip2/release/bizon_clickhouse.wasm"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tcp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
inter=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
clickhouse-server --config-file=/etc/clickhouse-server/config.xml -- --path="$work/ch/" \
    --tmp_path="$work/ch/tmp/" --user_files_path="$work/ch/user_files/" --format_schema_path="$work/ch/fs/" \
    --logger.log="$work/s.log" --logger.errorlog="$work/e.log" \
    --http_port="$port" --tcp_port="$tcp" --interserver_http_port="$inter" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 150); do
    [[ $(curl -s "$url/?query=SELECT+1" || true) == 1 ]] && break
    sleep 0.2
done

schema='[{name: id, type: INTEGER, mode: REQUIRED}, {name: name, type: STRING}, {name: age, type: INTEGER}, {name: active, type: BOOLEAN}, {name: score, type: FLOAT}, {name: tags, type: STRING, mode: REPEATED}]'
common="name: bench
source:
  name: dummy
  total_records: $n
  destination_ids: [users, orders, events]
destination:"
records="    unnest: true
    record_schemas:
      - {destination_id: users, record_schema: $schema}
      - {destination_id: orders, record_schema: $schema}
      - {destination_id: events, record_schema: $schema}"

mkdir -p "$work/out"
cat >"$work/file.yaml" <<YAML
$common
  name: file
  config:
    path: $work/out
$records
YAML
cat >"$work/ch.yaml" <<YAML
$common
  name: wasm
  config:
    plugin: $plugin
    plugin_config: {url: "$url"}
    allow:
      hosts: ["$url"]
$records
YAML

rate() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{r['records_written']/r['duration_s']:.0f} records/s ({r['records_written']} in {r['duration_s']:.2f} s)\")" "$1"; }
(cd "$work" && "$bin" run file.yaml --no-progress --result-json file.json >/dev/null 2>&1)
(cd "$work" && "$bin" run ch.yaml --no-progress --result-json ch.json >/dev/null 2>&1)
echo "file (native, JSON):           $(rate "$work/file.json")"
echo "wasm bizon-clickhouse (HTTP):  $(rate "$work/ch.json")"
total=0
for t in users orders events; do
    c=$(curl -s "$url/?query=SELECT+count()+FROM+$t")
    echo "  SELECT count() FROM $t: $c"
    total=$((total + c))
done
[[ $total == "$n" ]] || { echo "ClickHouse holds $total rows, expected $n" >&2; exit 1; }
