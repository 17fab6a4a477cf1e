#!/usr/bin/env bash
# An hour of the host under steady Kafka traffic (not CI: CI runs the e2e
# suite's short forms). Two modes:
#
#   bash bench/soak.sh serve [MINUTES [TENANTS]]   (60 and 20 by default)
#   bash bench/soak.sh run [MINUTES]               (60 by default)
#   SOAK_PROFILE=dev bash bench/soak.sh serve 2    (the dev build: a smoke run)
#
# serve: `bizon-host serve` with TENANTS tenants, each with a stream-mode
# Kafka pipeline into the csv plugin, RATE messages a second (5) to each
# tenant's topic; every SWAP_S seconds (180) one tenant uploads the plugin
# again and moves its running pipeline to the new version; HOSTILE tenants
# (2) run the hostile test plugin (one allocates until its memory cap, one
# panics on every write) and ask for a start at every sample, as a script
# restarting a failing pipeline would: the host's restart backoff decides
# how many it accepts; at every sample each tenant's pipelines, logs and
# the host's /metrics are read through the API.
# run: `bizon-host run` of one stream-mode Kafka pipeline on RUN_TOPICS
# topics (4) into the native `file` destination, RUN_RATE messages a second
# (250) to each, its /metrics read at every sample.
#
# Every 10 s a line goes to soak.csv: elapsed s, RSS KiB, open files,
# threads, compile cache KiB, CPU s, records written (the host's metric),
# messages produced (acknowledged by the broker). At the end: the growth of
# RSS, open files, threads and compile cache after a 5-minute warm-up (a
# twelfth of a shorter run), as medians (bench/soak.py growth: more than 5%
# fails), every message produced looked for in the output
# (bench/soak.py check: 0 lost or the script fails), and soak.png
# (bench/soak.py plot). The last run's figures are in docs/serve.md, "An
# hour".
#
# The producer is the e2e binary's `faults::soak::produce` (rdkafka, as the
# tests produce). Both binaries are copied into the work directory first,
# so builds during the hour do not touch them. Needs tansu
# (scripts/install-kafka.sh), curl, jq, the guests (scripts/build-plugins.sh)
# and matplotlib (installed into .venv when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-serve}"
[[ $mode == serve || $mode == run ]] || { echo "usage: bench/soak.sh serve|run [MINUTES [TENANTS]]" >&2; exit 2; }
minutes="${2:-60}"
tenants="${3:-20}"
hostile="${HOSTILE:-2}"
rate="${RATE:-5}"
swap_s="${SWAP_S:-180}"
run_topics="${RUN_TOPICS:-4}"
run_rate="${RUN_RATE:-250}"
tansu="${TANSU:-.venv/bin/tansu}"
python=.venv/bin/python
wasm=target/wasm/wasm32-wasip2/release
profile=(--release)
[[ ${SOAK_PROFILE:-release} == dev ]] && profile=()
for tool in curl jq "$tansu" "$python" "$wasm/bizon_csv.wasm" "$wasm/hostile.wasm"; do
    command -v "$tool" >/dev/null || [[ -e $tool ]] || {
        echo "missing: $tool (bash scripts/install.sh; bash scripts/build-plugins.sh)" >&2
        exit 1
    }
done
"$python" -c 'import matplotlib' 2>/dev/null || "$python" -m pip install -q matplotlib

work=$(mktemp -d /tmp/bizon-soak.XXXXXX)
# The host and the producer (the e2e test binary), built as the tests build
# them, and copied; or SOAK_BINARIES, a directory holding both (`bizon-host`
# and `e2e`) from an earlier build, so that a soak can start while the tree
# has moved on.
if [[ -n ${SOAK_BINARIES:-} ]]; then
    cp "$SOAK_BINARIES/bizon-host" "$SOAK_BINARIES/e2e" "$work/"
else
    nice -n 10 cargo test "${profile[@]}" -p bizon-host --test e2e --no-run
    e2e=$(cargo test "${profile[@]}" -p bizon-host --test e2e --no-run --message-format json 2>/dev/null |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "e2e") | .executable')
    target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
    cp "$target/$([[ ${#profile[@]} == 0 ]] && echo debug || echo release)/bizon-host" "$work/bizon-host"
    cp "$e2e" "$work/e2e"
fi
bin="$work/bizon-host"
echo "work directory: $work"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
kafka_port=$(free_port)
api_port=$(free_port)
broker="127.0.0.1:$kafka_port"
api="http://127.0.0.1:$api_port"
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

if [[ $mode == serve ]]; then
    topics=$(seq -s, -f 'soak-%g' 0 $((tenants - 1)))
    producer_rate=$rate
else
    topics=$(seq -s, -f 'soak-run-%g' 0 $((run_topics - 1)))
    producer_rate=$run_rate
fi
# One producer for every topic: it creates them first, and the pipelines
# start once it has sent.
BIZON_SOAK_BROKER=$broker BIZON_SOAK_TOPICS=$topics BIZON_SOAK_RATE=$producer_rate BIZON_SOAK_DIR=$work \
    "$work/e2e" --ignored --exact faults::soak::produce >"$work/producer.log" 2>&1 &
producer_pid=$!
pids+=("$producer_pid")
until [[ -e $work/sent ]]; do
    kill -0 "$producer_pid" 2>/dev/null || { cat "$work/producer.log" >&2; exit 1; }
    sleep 0.5
done
sent() { cat "$work/sent" 2>/dev/null || echo 0; }

call() { # METHOD PATH TOKEN [curl args...]
    local method=$1 path=$2 token=$3
    shift 3
    curl -sf -X "$method" -H "authorization: Bearer $token" "$api$path" "$@"
}

# A tenant's Kafka pipeline (TOPIC PLUGIN) into the csv plugin.
serve_pipeline() {
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

# A hostile tenant's pipeline (MODE of tests/plugins/hostile): fails at its
# first write, every time.
hostile_pipeline() {
    cat <<YAML
name: h
source: {name: dummy, stream: s, total_records: 1000, page_size: 100}
destination:
  name: wasm
  config: {plugin: hostile, buffer_size: 0, plugin_config: {mode: $1}}
YAML
}

tokens=()
hostile_tokens=()
if [[ $mode == serve ]]; then
    echo "" >"$work/serve.yaml"
    BIZON_HOST_ADMIN_TOKEN=$admin "$bin" serve --listen "127.0.0.1:$api_port" --data-dir "$work/data" \
        --config "$work/serve.yaml" >"$work/host.log" 2>&1 &
    host_pid=$!
    pids+=("$host_pid")
    until curl -sf -o /dev/null "$api/v1/openapi.json"; do sleep 0.2; done
    for ((t = 0; t < tenants; t++)); do
        token=$(call POST /v1/tenants "$admin" -H 'content-type: application/json' \
            -d "{\"name\": \"t$t\", \"limits\": {\"egress\": [\"tcp://$broker\"]}}" | jq -r .token)
        tokens+=("$token")
        call PUT /v1/plugins/csv "$token" --data-binary "@$wasm/bizon_csv.wasm" >/dev/null
        serve_pipeline "soak-$t" csv | call PUT /v1/pipelines/k "$token" --data-binary @- >/dev/null
        call POST /v1/pipelines/k/start "$token" >/dev/null
    done
    modes=(memory panic-write)
    for ((h = 0; h < hostile; h++)); do
        token=$(call POST /v1/tenants "$admin" -H 'content-type: application/json' \
            -d "{\"name\": \"hostile$h\"}" | jq -r .token)
        hostile_tokens+=("$token")
        call PUT /v1/plugins/hostile "$token" --data-binary "@$wasm/hostile.wasm" >/dev/null
        hostile_pipeline "${modes[$((h % 2))]}" | call PUT /v1/pipelines/h "$token" --data-binary @- >/dev/null
    done
    written() {
        curl -sf -H "authorization: Bearer $admin" "$api/metrics" |
            awk '/^bizon_serve_records_written_total\{/ { s += $NF } END { print s + 0 }'
    }
else
    mkdir -p "$work/out"
    cat >"$work/pipeline.yaml" <<YAML
name: soak
source:
  name: kafka
  sync_mode: stream
  bootstrap_servers: $broker
  group_id: soak
  topics: [$(echo "$topics" | sed 's/[^,]*/{name: &, destination_id: &}/g')]
  message_encoding: utf-8
  batch_size: 500
destination:
  name: file
  config: {format: json, path: $work/out, buffer_size: 0, buffer_flush_timeout: 1}
YAML
    "$bin" run "$work/pipeline.yaml" --no-progress --metrics-addr "127.0.0.1:$api_port" >"$work/host.log" 2>&1 &
    host_pid=$!
    pids+=("$host_pid")
    until curl -sf -o /dev/null "$api/metrics"; do
        kill -0 "$host_pid" 2>/dev/null || { cat "$work/host.log" >&2; exit 1; }
        sleep 0.2
    done
    written() {
        curl -sf "$api/metrics" | awk '/^bizon_records_written_total\{/ { s += $NF } END { print s + 0 }'
    }
fi

clock_ticks=$(getconf CLK_TCK)
cpu_s() { awk -v hz="$clock_ticks" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$host_pid/stat"; }
csv="$work/soak.csv"
echo "elapsed_s,rss_kib,open_files,threads,cache_kib,cpu_s,written,produced" >"$csv"
start=$SECONDS
end=$((start + minutes * 60))
next_swap=$((start + swap_s))
swapped=0
declare -A starts=()
while ((SECONDS < end)); do
    sleep 10
    kill -0 "$host_pid" 2>/dev/null || { echo "the host died:" >&2; tail -20 "$work/host.log" >&2; exit 1; }
    for token in "${tokens[@]}"; do
        call GET /v1/pipelines "$token" >/dev/null
        call GET /v1/pipelines/k/logs "$token" >/dev/null
    done
    for ((h = 0; h < ${#hostile_tokens[@]}; h++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
            -H "authorization: Bearer ${hostile_tokens[$h]}" "$api/v1/pipelines/h/start")
        starts[$code]=$((${starts[$code]:-0} + 1))
    done
    if ((${#tokens[@]} && SECONDS >= next_swap)); then
        # A new version of the plugin, and the running pipeline moved to
        # it between two batches.
        t=$((swapped % tenants))
        version=$(call PUT /v1/plugins/csv "${tokens[$t]}" --data-binary "@$wasm/bizon_csv.wasm" | jq -r .version)
        serve_pipeline "soak-$t" "csv@$version" | call PUT /v1/pipelines/k "${tokens[$t]}" --data-binary @- >/dev/null
        swapped=$((swapped + 1))
        next_swap=$((SECONDS + swap_s))
    fi
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$host_pid/status")
    threads=$(awk '/^Threads/ { print $2 }' "/proc/$host_pid/status")
    files=$(ls "/proc/$host_pid/fd" | wc -l)
    cache=$(du -sk "$work/data/cache" 2>/dev/null | cut -f1 || true)
    echo "$((SECONDS - start)),$rss,$files,$threads,${cache:-0},$(cpu_s),$(written),$(sent)" | tee -a "$csv"
done

# The producer stops; the pipelines get 60 s to write what is left.
touch "$work/stop"
wait "$producer_pid" || { cat "$work/producer.log" >&2; exit 1; }
produced=$(sent)
for ((i = 0; i < 60; i++)); do
    (($(written) >= produced)) && break
    sleep 1
done
final=$(written)
topic_list=${topics//,/ }
n_topics=$(wc -w <<<"$topic_list")
out="$work/out"
[[ $mode == serve ]] && out="$work/data/tenants"
echo "produced $produced, written $final (the host's metric); plugin swaps $swapped;" \
    "hostile starts by answer: $(for c in "${!starts[@]}"; do printf '%s ' "$c:${starts[$c]}"; done)"
grown=0
"$python" bench/soak.py growth "$csv" || grown=1
"$python" bench/soak.py plot "$csv" "$work/soak.png" \
    "bizon-host $mode, $minutes min$([[ $mode == serve ]] && echo ", $tenants tenants + $hostile hostile"), $(date -u +%F)"
echo "samples: $csv, plot: $work/soak.png"
# shellcheck disable=SC2086 # one topic per word
"$python" bench/soak.py check "$out" $((produced / n_topics)) $topic_list
((grown == 0)) || { echo "grew more than 5% after the warm-up" >&2; exit 1; }
