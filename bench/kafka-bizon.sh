#!/usr/bin/env bash
# Bizon 0.6.4's own `kafka` source on the work of `cargo bench -p bizon-host --bench kafka`:
# N Bizon-like JSON messages (~330 bytes) in a 4-partition topic, `sync_mode: full_refresh`, to
# Bizon's `file` destination with its default buffers. Prints one line:
#   bizon-kafka messages=N seconds=S lines=L distinct=D distinct_per_s=R peak_rss_mb=M rc=C
# seconds: wall time of the whole `bizon run` process; lines: rows written; distinct: distinct
# (topic, partition, offset) among them.
#
#   bash bench/kafka-bizon.sh [N]        (default 1000000; BENCH_PARTITIONS=4)
#
# The broker: BIZON_TEST_KAFKA_BROKERS=host:port, else tansu from .venv (scripts/install-kafka.sh),
# started here on a free port and stopped at the end. What had to change in Bizon's example config
# for it to run at all (nothing in Bizon's code is patched), see README.md "Performance":
#   - `authentication` is required even without SASL: `type: basic` with dummy params;
#   - its `consumer_config` must say `security.protocol: PLAINTEXT` (Bizon's default is SASL_SSL),
#     and a consumer_config replaces all of Bizon's defaults, so they are repeated;
#   - `message_encoding: utf-8` (Bizon's default is avro);
#   - `consumer_timeout: 2`: a full refresh ends only after one consume() returns nothing within
#     it (10 s by default would add 10 s to every run).
# BIZON_BENCH_TIMEOUT (default 1800 s) bounds the run; a run cut there reports rc=124.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/bench/bizon"
N="${1:-1000000}"
PARTITIONS="${BENCH_PARTITIONS:-4}"

"$HERE/setup.sh"
PY="$HERE/.venv/bin/python"
"$PY" -c 'import confluent_kafka, fastavro, avro' 2>/dev/null \
    || "$PY" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements-kafka.txt"

WORK="$(mktemp -d -t bizon-kafka-bench.XXXXXX)"
BROKER_PID=""
cleanup() {
    if [[ -n "$BROKER_PID" ]]; then kill "$BROKER_PID" 2>/dev/null || true; fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

SERVERS="${BIZON_TEST_KAFKA_BROKERS:-}"
if [[ -z "$SERVERS" ]]; then
    bash "$ROOT/scripts/install-kafka.sh" >/dev/null
    PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    SERVERS="127.0.0.1:$PORT"
    "$ROOT/.venv/bin/tansu" broker --listener-url "tcp://$SERVERS" --advertised-listener-url "tcp://$SERVERS" \
        --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
fi

TOPIC="bizon-bench-$$-$RANDOM"
"$PY" "$HERE/kafka_bench.py" produce "$SERVERS" "$TOPIC" "$N" "$PARTITIONS"

cat >"$WORK/kafka.yml" <<YAML
name: bizon kafka bench
source:
  name: kafka
  stream: topic
  sync_mode: full_refresh
  bootstrap_servers: $SERVERS
  group_id: bench-$TOPIC
  topics:
    - name: $TOPIC
      destination_id: bench_out
  batch_size: 1000
  consumer_timeout: 2
  message_encoding: utf-8
  authentication:
    type: basic
    params: {username: none, password: none}
  consumer_config:
    auto.offset.reset: earliest
    enable.auto.commit: false
    session.timeout.ms: 45000
    max.poll.interval.ms: 600000
    security.protocol: PLAINTEXT
destination:
  name: file
  config:
    destination_id: bench_out
YAML

cd "$WORK"
res="$(timeout "${BIZON_BENCH_TIMEOUT:-1800}" "$PY" "$HERE/run_bizon.py" "$WORK" \
    "$HERE/.venv/bin/bizon" run "$WORK/kafka.yml" || echo "seconds=${BIZON_BENCH_TIMEOUT:-1800} peak_rss_mb=0 rc=124")"
secs="$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$res")"
rss="$(sed -E 's/.*peak_rss_mb=([0-9.]+).*/\1/' <<<"$res")"
rc="$(sed -E 's/.* rc=([0-9-]+).*/\1/' <<<"$res")"
out="$WORK/bench_out.json"
[[ -f "$out" ]] || out="$(ls "$WORK"/bench_out*.json 2>/dev/null | head -1 || true)"
counts="lines=0 distinct=0"
[[ -n "$out" && -f "$out" ]] && counts="$("$PY" "$HERE/kafka_bench.py" count "$out")"
distinct="$(sed -E 's/.*distinct=([0-9]+).*/\1/' <<<"$counts")"
rate="$(awk -v d="$distinct" -v s="$secs" 'BEGIN { printf "%.0f", d / s }')"
if [[ "$rc" != 0 ]]; then
    echo "bizon run ended with rc=$rc; last log lines:" >&2
    tail -n 20 "$WORK/bizon.log" >&2
fi
echo "bizon-kafka messages=$N seconds=$secs $counts distinct_per_s=$rate peak_rss_mb=$rss rc=$rc"
