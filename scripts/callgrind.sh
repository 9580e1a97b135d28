#!/usr/bin/env bash
# Instructions per request for ping, produce and consume, counted by callgrind: repeatable on
# noisy machines where wall-clock numbers are not. The server runs under valgrind with one shard;
# loadgen drives a bounded number of requests; counters are zeroed after warm-up and prefill, so
# only the measured requests count.
# Usage: scripts/callgrind.sh [REQUESTS]   (needs target/release/{marconi,loadgen}, or MARCONI_BIN=another
#        server binary to compare builds with the same loadgen; prints a table;
#        DURABILITY=sync counts the durable store too, default memory: the request path alone)
#        TARGET=loadgen counts the load generator instead: the server runs natively on CPU 0 and
#        loadgen under callgrind sends N and then 2N requests; the difference over N is its cost
#        per request (start-up, connects, cleanup cancel out), all its threads included.
#        LOADGEN=path counts another build (an older commit's); PIPELINE=N adds --pipeline N.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-4000}
if [ "${TARGET:-server}" = loadgen ]; then
  port=${PORT:-18951}
  out=$(mktemp -d /tmp/marconi-callgrind-lg.XXXXXX)
  taskset -c 0 target/release/marconi serve --listen 127.0.0.1:$port --shards 1 --cpus 0 --log warn \
    --durability "${DURABILITY:-memory}" --data-dir "$out/data" >"$out/server.log" 2>&1 &
  srv=$!
  trap 'kill $srv 2>/dev/null || true; wait $srv 2>/dev/null || true; rm -rf "$out/data"' EXIT
  for _ in $(seq 1 100); do grep -q 'listening on' "$out/server.log" && break; sleep 0.1; done
  ir() { # name requests loadgen-args...
    local name=$1 r=$2; shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out/$name.$r" "${LOADGEN:-target/release/loadgen}" \
      --url "http://127.0.0.1:$port" --cpus 1 --no-progress --json --timeout-ms 60000 --requests "$r" "$@" \
      >"$out/$name.$r.json" 2>/dev/null
    awk '/^summary:/ {print $2}' "$out/$name.$r"
  }
  echo "| loadgen workload | instructions/request (marginal, $n -> $((2 * n)) requests) |"
  echo "|---|---|"
  for w in ping produce; do
    args=(-w produce --message-bytes 256 --batch 1 -c "${CONNS:-64}")
    [ "$w" = ping ] && args=(-w mixed --mix ping=1 -c "${CONNS:-64}")
    [ -n "${PIPELINE:-}" ] && args+=(--pipeline "$PIPELINE")
    a=$(ir "$w" "$n" "${args[@]}")
    b=$(ir "$w" $((2 * n)) "${args[@]}")
    python3 -c "print(f'| $w | {($b - $a) / $n:,.0f} |')"
  done
  exit 0
fi
# 16 connections keep the one shard busy under valgrind, so idle event-loop cycles (parking,
# reaping) weigh little; counts still move a few percent with how requests batch per cycle.
conns=${CONNS:-16}
port=${PORT:-18950}
url=http://127.0.0.1:$port
out=$(mktemp -d /tmp/marconi-callgrind.XXXXXX)
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.%p" \
  "${MARCONI_BIN:-target/release/marconi}" serve --listen 127.0.0.1:$port --shards 1 --log warn --durability "${DURABILITY:-memory}" \
  --data-dir "$out/data" >"$out/server.log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q 'listening on' "$out/server.log" && break; sleep 0.1; done
lg() { target/release/loadgen --url "$url" --no-progress --json --no-cleanup --no-audit --timeout-ms 60000 "$@"; }
measure() { # name, messages-field, loadgen args...
  local name=$1 field=$2; shift 2
  callgrind_control -z "$vg" >/dev/null
  lg "$@" >"$out/$name.json" || true   # consume of a pre-filled queue reports "not from this run"
  callgrind_control -d "$vg" >/dev/null
  sleep 0.5
  local part ir reqs msgs
  # One file per thread and dump (cg.PID.PART-THREAD): add up the threads of the newest dump.
  part=$(ls "$out" | sed -n 's/^cg\.[0-9]*\.\([0-9]*\)-[0-9]*$/\1/p' | sort -n | tail -1)
  ir=$(cat "$out"/cg.*."$part"-* | awk '/^summary:/ {s += $2} END {print s}')
  reqs=$(python3 -c "import json,sys; print(json.load(open('$out/$name.json'))['requests'])")
  msgs=$(python3 -c "import json,sys; d=json.load(open('$out/$name.json')); print(d.get('messages', 0))")
  python3 -c "ir=$ir; r=$reqs; m=$msgs; print(f'| $name | {r} | {ir/r:,.0f} | ' + (f'{ir/m:,.0f}' if m else '-') + ' |')"
}
lg -w mixed --mix ping=1 -c 8 --requests 500 >/dev/null   # warm-up: connections, caches
echo "| workload | requests | instructions/request | instructions/message |"
echo "|---|---|---|---|"
measure ping 0 -w mixed --mix ping=1 -c "$conns" --requests "$n"
measure produce 0 -w produce --message-bytes 256 --batch 1 -c "$conns" --requests "$n" --queue-prefix cg-produce
lg -w produce --message-bytes 256 --batch 10 -c 4 --requests "$n" --queue-prefix cg-consume --queues 1 >/dev/null || true
measure consume 0 -w consume --claim-limit 10 --prefill 0 -c "$conns" --requests "$n" --queue-prefix cg-consume --queues 1
