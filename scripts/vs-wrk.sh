#!/usr/bin/env bash
# Is loadgen faster than the server? The same server (one shard pinned to SERVER_CPU) driven in
# the same run by wrk and by loadgen, each on LOADGEN_CPU alone, for ping and produce (one
# 256-byte message per POST), in each durability mode of MODES. Every cell is the median of
# REPEAT runs; the two clients alternate which goes first. Prints the machine, then a markdown
# table with both rates, their ratio and the server's CPU per request under each client
# (user + system, from /proc). Installs wrk with apt-get when it is missing and we are root.
#
# Usage: scripts/vs-wrk.sh   (env: REPEAT=3 DURATION=5 CONNS=64 SERVER_CPU=0 LOADGEN_CPU=1
#                             MODES="memory sync" PIPELINE=1 OUT=/tmp/marconi-vs-wrk.XXXX
#                             LOADGEN=path: another loadgen build, e.g. an older commit's)
set -euo pipefail
cd "$(dirname "$0")/.."
MODES=${MODES:-memory sync}
PIPELINE=${PIPELINE:-1}
LOADGEN=${LOADGEN:-target/release/loadgen}
. scripts/server-lib.sh
bench_setup vs-wrk 18940

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y wrk >/dev/null
  else
    echo "wrk is not installed (Debian: apt-get install wrk)" >&2
    exit 2
  fi
fi
cargo build --release --locked -p marconi -p loadgen >/dev/null 2>&1
url=http://127.0.0.1:$PORT

echo "# loadgen vs wrk, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
describe_machine
echo "- $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "- server: taskset -c $SERVER_CPU marconi serve --shards 1 --cpus $SERVER_CPU --durability MODE (fresh data dir)"
echo "- wrk: taskset -c $LOADGEN_CPU wrk -t1 -c$CONNS -d${DURATION}s -s scripts/wrk/{ping,produce}.lua"
echo "- loadgen ($LOADGEN): --cpus $LOADGEN_CPU -c $CONNS --duration-s $DURATION --pipeline $PIPELINE (-w mixed --mix ping=1 | -w produce)"
echo "- $REPEAT runs per cell, medians"
echo

trap stop_server EXIT
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

client() { # mode workload client run
  local mode=$1 wl=$2 who=$3 i=$4 f="$OUT/$1.$2.$3.$4" before
  before=$(ticks)
  if [ "$who" = wrk ]; then
    taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "scripts/wrk/$wl.lua" "$url" >"$f.out" 2>&1 || true
  else
    local args=(-w produce --message-bytes 256 --batch 1)
    [ "$wl" = ping ] && args=(-w mixed --mix ping=1)
    [ "$PIPELINE" != 1 ] && args+=(--pipeline "$PIPELINE")
    "$LOADGEN" --url "$url" --cpus "$LOADGEN_CPU" -c "$CONNS" --duration-s "$DURATION" \
      --no-progress --json "${args[@]}" >"$f.out" 2>/dev/null || true
  fi
  echo $(( $(ticks) - before )) >"$f.ticks"
}

for mode in $MODES; do
  start_server "$mode"
  for i in $(seq 1 "$REPEAT"); do
    for wl in ping produce; do
      if [ $((i % 2)) = 1 ]; then order="wrk loadgen"; else order="loadgen wrk"; fi
      for who in $order; do client "$mode" "$wl" "$who" "$i"; done
    done
  done
  stop_server
done
trap - EXIT

python3 - "$OUT" "$REPEAT" "$(getconf CLK_TCK)" "$DURATION" "$MODES" <<'PY'
import json, re, statistics, sys
out, repeat, hz, duration, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5].split()

def run(mode, wl, who, i):
    base = f"{out}/{mode}.{wl}.{who}.{i}"
    text = open(base + ".out").read()
    if who == "wrk":
        m = re.search(r"Requests/sec:\s+([\d.]+)", text)
        rps = float(m.group(1)) if m else 0.0
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        errors = int(bad.group(1)) if bad else 0
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        errors += sum(int(x) for x in sock.groups()) if sock else 0
    else:
        try:
            d = json.loads(text)
            rps, errors = d["rps"], d["error_count"]
        except ValueError:
            rps, errors = 0.0, -1
    ticks = int(open(base + ".ticks").read())
    cpu_us = ticks / hz * 1e6 / max(1.0, rps * duration)
    return rps, cpu_us, errors

print("| durability | workload | wrk req/s | loadgen req/s | loadgen / wrk | server CPU µs/req (wrk / loadgen) | errors (wrk / loadgen) |")
print("|---|---|---|---|---|---|---|")
summary = {}
for mode in modes:
    for wl in ["ping", "produce"]:
        w = [run(mode, wl, "wrk", i) for i in range(1, repeat + 1)]
        l = [run(mode, wl, "loadgen", i) for i in range(1, repeat + 1)]
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        ratio = med(l, 0) / med(w, 0) if med(w, 0) else 0.0
        summary[f"{mode}.{wl}"] = {"wrk": [r[0] for r in w], "loadgen": [r[0] for r in l], "ratio": ratio}
        print(f"| {mode} | {wl} | {med(w, 0):,.0f} | {med(l, 0):,.0f} | {ratio:.2f}x | "
              f"{med(w, 1):.1f} / {med(l, 1):.1f} | {sum(r[2] for r in w)} / {sum(r[2] for r in l)} |")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(f"\nraw results: {out}")
PY
