#!/usr/bin/env bash
# The standard benchmark suite: marconi with one shard pinned to one CPU, loadgen pinned to the
# other, each workload run REPEAT times (bounded in time) and reported as medians, with the
# server's own CPU cost per request read from /proc. Prints the machine, kernel, commit and
# configuration first, then a markdown table; writes all raw JSON under OUT.
#
# Usage: scripts/bench.sh            (env: REPEAT=3 DURATION=5 CONNS=64 SERVER_CPU=0 LOADGEN_CPU=1
#                                     SERVER_ARGS="..." OUT=/tmp/marconi-bench.XXXX)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/server-lib.sh
bench_setup bench 18960
cargo build --release --locked -p marconi -p loadgen >/dev/null 2>&1
url=http://127.0.0.1:$PORT

echo "# marconi benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "- kernel: $(uname -r); commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
echo "- server: taskset -c $SERVER_CPU marconi serve --shards 1 --cpus $SERVER_CPU --data-dir (fresh) ${SERVER_ARGS:-} (default durability: sync)"
echo "- loadgen: --cpus $LOADGEN_CPU -c $CONNS --warmup-s 1 --duration-s $DURATION, $REPEAT runs each, medians"
echo

start_server() {
  rm -rf "$OUT/data"
  taskset -c "$SERVER_CPU" target/release/marconi serve --listen "127.0.0.1:$PORT" --shards 1 --cpus "$SERVER_CPU" \
    --data-dir "$OUT/data" --log warn ${SERVER_ARGS:-} >"$OUT/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do grep -q 'listening on' "$OUT/server.log" && return; sleep 0.1; done
  echo "server did not start" >&2; cat "$OUT/server.log" >&2; exit 1
}
stop_server() { kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -rf "$OUT/data"; }
trap stop_server EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

run() { # name, loadgen args...
  local name=$1; shift
  for i in $(seq 1 "$REPEAT"); do
    local before after
    before=$(cpu_ticks)
    target/release/loadgen --url "$url" --cpus "$LOADGEN_CPU" --no-progress --json --warmup-s 1 \
      --duration-s "$DURATION" "$@" >"$OUT/$name.$i.json" || true
    after=$(cpu_ticks)
    echo $((after - before)) >"$OUT/$name.$i.ticks"
  done
}

start_server
run ping -w mixed --mix ping=1 -c "$CONNS"
run produce -w produce --message-bytes 256 --batch 1 -c "$CONNS"
run consume -w consume --claim-limit 10 --prefill 200000 --queues 1 -c "$CONNS" --no-audit
run pubsub -w pubsub --message-bytes 256 --queues 8 --readers 4 -c 8 --no-audit
stop_server
trap - EXIT

python3 - "$OUT" "$REPEAT" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
out, repeat, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = []
print("| workload | req/s | msg/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|---|")
summary = {}
for name in ["ping", "produce", "consume", "pubsub"]:
    runs = []
    for i in range(1, repeat + 1):
        try:
            d = json.load(open(f"{out}/{name}.{i}.json"))
        except Exception:
            continue
        ticks = int(open(f"{out}/{name}.{i}.ticks").read())
        total = d["requests"] + d.get("warmup_requests", 0)
        secs = d["duration_s"]
        # CPU over the whole run (warm-up included) divided by the requests in it.
        cpu_us = ticks / hz * 1e6 / max(1, d["rps"] * (secs + 1.0))
        runs.append((d["rps"], d["mps"], d["latency_us"]["p50"], d["latency_us"]["p99"], d["latency_us"]["p99.9"], cpu_us, d.get("error_count", 0)))
    if not runs:
        continue
    med = [statistics.median(col) for col in zip(*runs)]
    summary[name] = med
    print(f"| {name} | {med[0]:,.0f} | {med[1]:,.0f} | {med[2]:,.0f} | {med[3]:,.0f} | {med[4]:,.0f} | {med[5]:.1f} | {med[6]:.0f} |")
if "ping" in summary:
    p = summary["ping"]
    for name in ["produce", "consume"]:
        if name in summary:
            s = summary[name]
            print(f"\n{name}/ping: throughput {s[1] / p[0]:.2f}x (messages/s over ping req/s); "
                  f"server CPU per message {s[5] * s[0] / max(s[1], 1) / p[5]:.2f}x ping's per request")
json.dump(summary, open(f"{out}/summary.json", "w"))
print(f"\nraw results: {out}")
PY
