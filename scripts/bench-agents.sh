#!/usr/bin/env bash
# The agents workload: AGENTS connections long-polling their own queues (claims with wait) while
# PRODUCERS post RATE commands/s to random agents, against one shard on SERVER_CPU with loadgen on
# LOADGEN_CPU; REPEAT runs per agent count, each on a fresh server, reported as medians: delivery
# latency (post -> claimed by its agent), connections open at the end of the window, the server's
# RSS then (and RSS per connection above an idle server's), delivered/lost/duplicated counts.
#
# Usage: scripts/bench-agents.sh   (env: AGENTS="1000 15000" PRODUCERS=8 RATE=2000 DURATION=10
#                                   REPEAT=3 DURABILITY=sync SERVER_CPU=0 LOADGEN_CPU=1)
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${AGENTS:-1000 15000}
PRODUCERS=${PRODUCERS:-8}
RATE=${RATE:-2000}
DURABILITY=${DURABILITY:-sync}
DURATION=${DURATION:-10}
. scripts/server-lib.sh
bench_setup agents 18930
cargo build --release --locked -p marconi -p loadgen >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"

echo "# agents workload, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
describe_machine
echo "- open files: $(ulimit -n)"
echo "- server: taskset -c $SERVER_CPU marconi serve --shards 1 --cpus $SERVER_CPU --durability $DURABILITY (fresh data dir each run)"
echo "- loadgen: -w agents --agents N -c $PRODUCERS --rate $RATE --duration-s $DURATION --cpus $LOADGEN_CPU --server-pid PID; $REPEAT runs, medians"
echo

trap stop_server EXIT
for n in $AGENTS; do
  for i in $(seq 1 "$REPEAT"); do
    start_server "$DURABILITY"
    awk '/^VmRSS:/ {print $2}' "/proc/$server/status" >"$OUT/$n.$i.idle_rss"
    target/release/loadgen --url "http://127.0.0.1:$PORT" --cpus "$LOADGEN_CPU" -w agents --agents "$n" \
      -c "$PRODUCERS" --rate "$RATE" --duration-s "$DURATION" --server-pid "$server" --no-progress --json \
      >"$OUT/$n.$i.json" || true
    stop_server
  done
done
trap - EXIT

python3 - "$OUT" "$REPEAT" "$AGENTS" <<'PY'
import json, statistics, sys
out, repeat, agents = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
print("| agents | connections open | commands/s | delivered / acknowledged | lost | duplicates | delivery p50 µs | p99 µs | p99.9 µs | max µs | server RSS MiB | RSS per connection KiB | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for n in agents:
    rows = []
    for i in range(1, repeat + 1):
        try:
            d = json.load(open(f"{out}/{n}.{i}.json"))
        except (OSError, ValueError):
            continue
        idle = int(open(f"{out}/{n}.{i}.idle_rss").read() or 0)
        rss = d["memory"]["server_rss_kib"] or 0
        conns = d["connections"]["open_at_window_end"]
        dl = d["delivery_latency_us"]
        g = d["agents"]
        rows.append((conns, d["mps"], g["delivered"], g["acknowledged"], d["audit"]["lost"], d["duplicates"],
                     dl["p50"], dl["p99"], dl["p99.9"], dl["max"], rss / 1024, (rss - idle) / max(conns, 1), d["error_count"]))
    if not rows:
        continue
    m = [statistics.median(c) for c in zip(*rows)]
    print(f"| {n} | {m[0]:,.0f} | {m[1]:,.0f} | {m[2]:,.0f} / {m[3]:,.0f} | {sum(r[4] for r in rows)} | {sum(r[5] for r in rows)} | "
          f"{m[6]:,.0f} | {m[7]:,.0f} | {m[8]:,.0f} | {m[9]:,.0f} | {m[10]:,.1f} | {m[11]:,.1f} | {sum(r[12] for r in rows)} |")
print(f"\nraw results: {out}")
PY
