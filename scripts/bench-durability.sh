#!/usr/bin/env bash
# Group-commit throughput: the produce workload at 1, 16 and 128 concurrent producers against a
# one-shard server in each durability mode, 3 runs each; prints one line per run and the
# medians. Server on CPU 0, loadgen on CPU 1 (a 2-core box: design notes).
# Usage: scripts/bench-durability.sh [DURATION_S] [MODES...]   (default 10 s; sync interval none memory)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
shift || true
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(sync interval none memory)
cargo build --release -p marconi -p loadgen >&2
port=18990
results=$(mktemp)
for mode in "${modes[@]}"; do
  for c in 1 16 128; do
    for run in 1 2 3; do
      data=$(mktemp -d /var/tmp/marconi-bench.XXXXXX)
      taskset -c 0 target/release/marconi serve --listen "127.0.0.1:$port" --shards 1 --cpus 0 \
        --durability "$mode" --data-dir "$data" --log info >/dev/null 2>"$data.log" &
      pid=$!
      for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/ping" && break; sleep 0.1; done
      json=$(target/release/loadgen --url "http://127.0.0.1:$port" -w produce -c "$c" --cpus 1 \
        --warmup-s 2 --duration-s "$duration" --json --no-progress)
      kill -TERM "$pid"; wait "$pid" || true
      flushes=$(sed 's/\x1b\[[0-9;]*m//g' "$data.log" | grep -o 'flushes=[0-9]*' | tail -1 | cut -d= -f2 || true)
      python3 - "$mode" "$c" "$run" "${flushes:-0}" "$duration" <<PY >>"$results"
import json, sys
mode, c, run, flushes, duration = sys.argv[1:]
d = json.loads('''$json''')
lat = d["latency_us"]
# Flushes cover warm-up and measured time; requests per flush is over the whole run.
total = d["requests"] * (float(duration) + 2) / float(duration)
per_flush = total / int(flushes) if int(flushes) else 0
print(f"{mode} {c} {run} {d['rps']:.0f} {lat['p50']} {lat['p99']} {per_flush:.1f} {d['error_count']}")
PY
      tail -1 "$results" >&2
      rm -rf "$data" "$data.log"
      port=$((port + 1))
    done
  done
done
echo "mode conns req/s(median) p50_us p99_us req_per_flush errors"
python3 - "$results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    mode, c, run, rps, p50, p99, per_flush, errors = line.split()
    rows[(mode, int(c))].append((float(rps), float(p50), float(p99), float(per_flush), int(errors)))
for (mode, c), rs in rows.items():
    med = lambda i: statistics.median(r[i] for r in rs)
    spread = f"{min(r[0] for r in rs):.0f}-{max(r[0] for r in rs):.0f}"
    print(f"{mode:8} {c:4} {med(0):8.0f} ({spread}) {med(1):8.0f} {med(2):8.0f} {med(3):6.1f} {sum(r[4] for r in rs)}")
PY
rm -f "$results"
