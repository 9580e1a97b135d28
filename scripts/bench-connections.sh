#!/usr/bin/env bash
# Issue 10's memory and group-commit rows, on one shard pinned to SERVER_CPU (client on
# LOADGEN_CPU), each cell REPEAT times with a fresh server:
# - server memory per idle keep-alive connection and per parked long poll, at each count of
#   COUNTS (scripts/hold_connections.py: RSS before, held, after closing; the kernel's TCP memory
#   apart), so the slope between two counts projects larger ones;
# - produce of one 256-byte message per POST with IN_FLIGHT requests in flight on one connection
#   (loadgen --pipeline), in each mode of MODES, with the server's flush count per request.
# Prints JSON lines; docs/perf.md shows how they were read.
#
# Usage: scripts/bench-connections.sh   (env: REPEAT=3 COUNTS="5000 15000" IN_FLIGHT=64
#                                         DURATION=5 MODES="memory sync" SERVER_CPU=0 LOADGEN_CPU=1)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-5000 15000}
IN_FLIGHT=${IN_FLIGHT:-64}
MODES=${MODES:-memory sync}
. scripts/server-lib.sh
bench_setup connections 18960
cargo build --release --locked -p marconi -p loadgen >/dev/null 2>&1
url=http://127.0.0.1:$PORT
# One client address holds every connection: lift the per-address and per-shard limits.
export MARCONI_HTTP_MAX_CONNECTIONS_PER_ADDRESS=20000 MARCONI_HTTP_MAX_CONNECTIONS_PER_SHARD=20000
trap stop_server EXIT

echo "# connections and pipelined produce, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
describe_machine
echo "- open files per process: $(ulimit -n)"
for kind in idle poll; do
  for n in $COUNTS; do
    for i in $(seq 1 "$REPEAT"); do
      start_server memory
      flag=; [ "$kind" = poll ] && flag=--poll
      echo "{\"kind\": \"$kind\", \"run\": $i, \"result\": $(taskset -c "$LOADGEN_CPU" python3 scripts/hold_connections.py \
        --url "$url" --pid "$server" -n "$n" $flag)}"
      stop_server
    done
  done
done

flushes() { curl -s "$url/metrics" | awk -F' ' '/^marconi_storage_flushes_total\{shard="all"\}/ {print $2}'; }
for mode in $MODES; do
  for i in $(seq 1 "$REPEAT"); do
    start_server "$mode"
    before=$(flushes); before=${before:-0}
    result=$(target/release/loadgen --url "$url" --cpus "$LOADGEN_CPU" -c 1 --pipeline "$IN_FLIGHT" -w produce \
      --message-bytes 256 --batch 1 --warmup-s 0 --duration-s "$DURATION" --no-progress --json 2>/dev/null || true)
    after=$(flushes); after=${after:-0}
    echo "$result" | python3 -c "import json,sys; d=json.load(sys.stdin); l=d['latency_us']; \
print(json.dumps({'kind': 'pipelined', 'mode': '$mode', 'run': $i, 'in_flight': $IN_FLIGHT, 'rps': round(d['rps']), \
'p50_us': l['p50'], 'p99_us': l['p99'], 'errors': d['error_count'], 'requests': d['requests'], \
'flushes': $after - $before}))"
    stop_server
  done
done
trap - EXIT
rm -rf "$OUT"
