#!/usr/bin/env bash
# Webhook destinations posting 1,000-record JSON arrays to a local HTTP
# server, each request sent by the host over wasi:http:
#   bash bench/sdk-http.sh [N]    (N dummy records a run; default 200000)
#   BIZON_HOST=path/to/bizon-host bash bench/sdk-http.sh   (that binary, no cargo build)
# - plugins/python-webhook: `requests` (Session.post, raise_for_status)
# - plugins/js-webhook: `fetch`, the SDK's (buffer_size 10: docs/sdk-js.md)
# - tests/plugins/js-http with `native: true`: the same requests through
#   StarlingMonkey's own fetch
# - plugins/http: the first-party Rust plugin, for comparison (split by
#   bytes: 380 kB is about 1,000 dummy records)
# Each runs twice with a warm compile cache; records/s is the second run's
# records_written / duration_s. The server (Python, one thread a request)
# counts the records it received, and the run fails unless it saw all N.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200000}"
bash scripts/build-plugins.sh >/dev/null
if [[ -n ${BIZON_HOST:-} ]]; then
    bin="$BIZON_HOST"
else
    cargo build -q --release -p bizon-host
    bin="${CARGO_TARGET_DIR:-$PWD/target}/release/bizon-host"
fi
work=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
export BIZON_HOST_CACHE_DIR="$work/cache"

# A receiver: 200 to every POST; GET /count answers "RECORDS REQUESTS"
# received since the last GET (a JSON array, or NDJSON lines, a request).
cat > "$work/server.py" <<'PY'
import http.server, json, threading
count = requests = 0
lock = threading.Lock()
class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count, requests
        body = self.rfile.read(int(self.headers["content-length"]))
        rows = len(json.loads(body)) if body.startswith(b"[") else body.count(b"\n")
        with lock:
            count += rows
            requests += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def do_GET(self):
        global count, requests
        with lock:
            text = f"{count} {requests}\n".encode()
            count = requests = 0
        self.send_response(200)
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
coproc SERVER { exec python3 "$work/server.py"; }
server_pid=$SERVER_PID
read -r port <&"${SERVER[0]}"
url="http://127.0.0.1:$port"

# run LABEL PLUGIN PLUGIN_CONFIG BUFFER_MB: prints "records/s requests/s peak_rss_mb"
run() {
    local dir="$work/$1"
    rm -rf "$dir" && mkdir -p "$dir"
    cat > "$dir/p.yaml" <<YAML
name: bench
source: {name: dummy, total_records: $n}
destination:
  name: wasm
  config:
    plugin: $2
    plugin_config: $3
    buffer_size: $4
    allow:
      hosts: ["$url"]
YAML
    "$bin" run "$dir/p.yaml" --result-json "$dir/r.json" --no-progress 2>"$dir/log" || { cat "$dir/log" >&2; exit 1; }
    local seen requests
    read -r seen requests < <(curl -s "$url/count")
    [[ $seen == "$n" ]] || { echo "$1: the server received $seen records of $n" >&2; exit 1; }
    python3 - "$dir/r.json" "$requests" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = r["duration_s"]
print(f"{r['records_written'] / d:.0f} {int(sys.argv[2]) / d:.0f} {r['peak_rss_bytes'] / 2**20:.0f}")
PY
}

echo "## dummy $n records -> a webhook on 127.0.0.1, JSON arrays of 1,000 records"
printf '| plugin | records/s | requests/s | peak RSS MB |\n|---|---|---|---|\n'
for row in "Python python-webhook (requests)|target/wasm/python/python_webhook.wasm|{url: \"$url/in\"}|50" \
    "JavaScript js-webhook (the SDK's fetch)|target/wasm/js/js_webhook.wasm|{url: \"$url/in\"}|10" \
    "JavaScript, StarlingMonkey's own fetch|target/wasm/js/js_http.wasm|{url: \"$url/in\", native: true}|10" \
    "Rust plugins/http|target/wasm/wasm32-wasip2/release/bizon_http.wasm|{url: \"$url/in\", encoding: json_array, max_request_bytes: 380000}|50"; do
    IFS='|' read -r label wasm config buffer <<<"$row"
    run warmup "$PWD/$wasm" "$config" "$buffer" >/dev/null
    read -r rps reqs rss < <(run measured "$PWD/$wasm" "$config" "$buffer")
    printf '| %s | %s | %s | %s |\n' "$label" "$rps" "$reqs" "$rss"
done
