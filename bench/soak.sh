#!/usr/bin/env bash
# `bizon-host serve` for an hour (not CI): TENANTS tenants (20), each with a
# stream-mode Kafka pipeline into the csv plugin, a producer writing RATE
# messages a second (5) to each tenant's topic, the csv plugin uploaded
# again (a swap mid-run) for one tenant every SWAP_S seconds (180), and the
# API (every tenant's pipelines) and /metrics polled at each sample. Every
# 10 s it writes a line to soak.csv: elapsed s, RSS KiB, open files,
# threads, compile cache KiB, records written (all tenants), messages
# produced. At the end: growth of RSS, files and threads from the sample at
# 5 minutes (or a twelfth of the run, when shorter) to the last, and
# produced vs written (the pipelines are given 60 s to catch up).
#
#   bash bench/soak.sh [MINUTES [TENANTS]]      (60 and 20 by default)
#   SOAK_PROFILE=dev bash bench/soak.sh 2       (the dev build: a smoke run)
#
# The producer is the e2e binary's `faults::soak::produce` (rdkafka, as the
# tests produce). Needs tansu (scripts/install-kafka.sh), curl and jq, and
# the csv plugin (scripts/build-plugins.sh). Left out so far: hostile
# tenants restarting on backoff, a plot of soak.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
tenants="${2:-20}"
rate="${RATE:-5}"
swap_s="${SWAP_S:-180}"
tansu="${TANSU:-.venv/bin/tansu}"
plugin=target/wasm/wasm32-wasip2/release/bizon_csv.wasm
profile=(--release)
[[ ${SOAK_PROFILE:-release} == dev ]] && profile=()
# The host and the producer, built as the tests build them.
cargo=(cargo test "${profile[@]}" -p bizon-host --test e2e)
nice -n 10 "${cargo[@]}" --no-run
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
bin="$target/$([[ ${#profile[@]} == 0 ]] && echo debug || echo release)/bizon-host"
for tool in curl jq "$bin" "$tansu" "$plugin"; do
    command -v "$tool" >/dev/null || [[ -e $tool ]] || {
        echo "missing: $tool (bash scripts/install.sh; cargo build --release; bash scripts/build-plugins.sh)" >&2
        exit 1
    }
done

work=$(mktemp -d /tmp/bizon-soak.XXXXXX)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
kafka_port=$(free_port)
serve_port=$(free_port)
broker="127.0.0.1:$kafka_port"
api="http://127.0.0.1:$serve_port"
admin=soak-admin-token
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

"$tansu" broker --listener-url "tcp://$broker" --advertised-listener-url "tcp://$broker" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
until (echo >"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null; do sleep 0.2; done

# One producer for every topic: RATE messages a second to each.
topics=$(seq -s, -f 'soak-%g' 0 $((tenants - 1)))
BIZON_SOAK_BROKER=$broker BIZON_SOAK_TOPICS=$topics BIZON_SOAK_RATE=$rate BIZON_SOAK_DIR=$work \
    "${cargo[@]}" -- --ignored --exact faults::soak::produce >"$work/producer.log" 2>&1 &
pids+=($!)
# It creates the topics first: the pipelines start once it has sent.
until [[ -e $work/sent ]]; do
    kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/producer.log" >&2; exit 1; }
    sleep 0.5
done

echo "" >"$work/serve.yaml"
BIZON_HOST_ADMIN_TOKEN=$admin "$bin" serve --listen "127.0.0.1:$serve_port" --data-dir "$work/data" \
    --config "$work/serve.yaml" >"$work/serve.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
until curl -sf -o /dev/null "$api/v1/openapi.json"; do sleep 0.2; done

call() { # METHOD PATH TOKEN [curl args...]
    local method=$1 path=$2 token=$3
    shift 3
    curl -sf -X "$method" -H "authorization: Bearer $token" "$api$path" "$@"
}

pipeline() { # TOPIC PLUGIN: a tenant's Kafka pipeline into the csv plugin
    cat <<YAML
name: k
source:
  name: kafka
  sync_mode: stream
  bootstrap_servers: $broker
  group_id: g
  topic: $1
  message_encoding: utf-8
  batch_size: 100
destination:
  name: wasm
  config:
    plugin: $2
    buffer_size: 0
    buffer_flush_timeout: 1
    plugin_config: {dir: /out}
    allow:
      dirs:
        - {host: out, guest: /out, writable: true, max_mb: 900}
YAML
}

tokens=()
for ((t = 0; t < tenants; t++)); do
    topic="soak-$t"
    token=$(call POST /v1/tenants "$admin" -H 'content-type: application/json' \
        -d "{\"name\": \"t$t\", \"limits\": {\"egress\": [\"tcp://$broker\"]}}" | jq -r .token)
    tokens+=("$token")
    call PUT /v1/plugins/csv "$token" --data-binary "@$plugin" >/dev/null
    pipeline "$topic" csv | call PUT /v1/pipelines/k "$token" --data-binary @- >/dev/null
    call POST /v1/pipelines/k/start "$token" >/dev/null
done

written() {
    curl -sf -H "authorization: Bearer $admin" "$api/metrics" |
        awk '/^bizon_serve_records_written_total\{/ { s += $NF } END { print s + 0 }'
}
sent() { cat "$work/sent" 2>/dev/null || echo 0; }

csv="$work/soak.csv"
echo "elapsed_s,rss_kib,open_files,threads,cache_kib,written,produced" >"$csv"
start=$SECONDS
end=$((start + minutes * 60))
next_swap=$((start + swap_s))
swapped=0
while ((SECONDS < end)); do
    sleep 10
    kill -0 "$serve_pid" 2>/dev/null || { echo "serve died:" >&2; tail -20 "$work/serve.log" >&2; exit 1; }
    for token in "${tokens[@]}"; do call GET /v1/pipelines "$token" >/dev/null; done
    if ((SECONDS >= next_swap)); then
        # A new version of the plugin, and the running pipeline moved to
        # it between two batches.
        t=$((swapped % tenants))
        version=$(call PUT /v1/plugins/csv "${tokens[$t]}" --data-binary "@$plugin" | jq -r .version)
        pipeline "soak-$t" "csv@$version" | call PUT /v1/pipelines/k "${tokens[$t]}" --data-binary @- >/dev/null
        swapped=$((swapped + 1))
        next_swap=$((SECONDS + swap_s))
    fi
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$serve_pid/status")
    threads=$(awk '/^Threads/ { print $2 }' "/proc/$serve_pid/status")
    files=$(ls "/proc/$serve_pid/fd" | wc -l)
    cache=$(du -sk "$work/data/cache" 2>/dev/null | cut -f1)
    echo "$((SECONDS - start)),$rss,$files,$threads,$cache,$(written),$(sent)" | tee -a "$csv"
done

# The producer stops; the pipelines get 60 s to write what is left.
touch "$work/stop"
wait "${pids[1]}" || { cat "$work/producer.log" >&2; exit 1; }
produced=$(sent)
for ((i = 0; i < 60; i++)); do
    (($(written) >= produced)) && break
    sleep 1
done
final=$(written)
echo "produced $produced, written $final (every tenant, at least once), plugin swaps $swapped"
warm=$((minutes * 60 >= 3600 ? 300 : minutes * 60 / 12))
awk -F, -v warm="$warm" 'NR > 1 && $1 >= warm && !base { base = 1; r = $2; f = $3; t = $4 }
    NR > 1 { lr = $2; lf = $3; lt = $4 }
    END {
        if (!base) { print "too short to compare"; exit }
        printf "from %d s to the end: RSS %+.1f%% (%d -> %d KiB), open files %+.1f%% (%d -> %d), threads %+.1f%% (%d -> %d)\n",
            warm, (lr - r) * 100 / r, r, lr, (lf - f) * 100 / f, f, lf, (lt - t) * 100 / t, t, lt
    }' "$csv"
echo "samples: $csv"
((final >= produced)) || { echo "LOST: $((produced - final)) messages not written" >&2; exit 1; }
