#!/usr/bin/env bash
# One run, same machine, same pinning: marconi vs a real Zaqar (../shared/peers/zaqar) vs Redis
# (redis-benchmark LPUSH/RPOP with appendfsync always), on the `produce` workload (1 message of
# 256 bytes per request, 64 connections). Servers on SERVER_CPU, load generators on LOADGEN_CPU.
# Prints each throughput and the ratios. Needs ../shared/conformance/setup.sh (Zaqar venv, redis).
#
# Usage: scripts/compare.sh   (env: DURATION=10 CONNS=64 SERVER_CPU=0 LOADGEN_CPU=1
#                              MARCONI_ARGS="--durability sync" to choose marconi's durability)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
OUT=$(mktemp -d /tmp/marconi-compare.XXXXXX)
cargo build --release --locked -p marconi -p loadgen >/dev/null 2>&1
lg() { target/release/loadgen --cpus "$LOADGEN_CPU" --no-progress --json --warmup-s 1 --duration-s "$DURATION" "$@"; }
mps() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{d['mps']:.0f} {d['latency_us']['p50']} {d['latency_us']['p99']}\")" "$1"; }

echo "# produce, 1 x 256 B per request, $CONNS connections, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD)"
echo "# servers on CPU $SERVER_CPU, load on CPU $LOADGEN_CPU, ${DURATION}s each; $(nproc) CPUs, kernel $(uname -r)"

# marconi
data=$(mktemp -d /tmp/marconi-compare-data.XXXXXX)
taskset -c "$SERVER_CPU" target/release/marconi serve --listen 127.0.0.1:18970 --shards 1 --cpus "$SERVER_CPU" \
  --data-dir "$data" --log warn ${MARCONI_ARGS:-} >"$OUT/marconi.log" 2>&1 &
m=$!
for _ in $(seq 1 100); do grep -q 'listening on' "$OUT/marconi.log" && break; sleep 0.1; done
lg --url http://127.0.0.1:18970 -w produce --message-bytes 256 --batch 1 -c "$CONNS" >"$OUT/marconi.json" || true
kill -TERM $m; wait $m || true
rm -rf "$data"

# Zaqar (uWSGI + redis, as devstack deploys it), pinned like marconi
../shared/peers/zaqar/start.sh 18971 >/dev/null
for pid in $(pgrep -f "uwsgi.*18971") $(cat /tmp/zaqar-peer-18971/redis.pid 2>/dev/null); do taskset -pc "$SERVER_CPU" "$pid" >/dev/null; done
lg --url http://127.0.0.1:18971 -w produce --message-bytes 256 --batch 1 -c "$CONNS" --timeout-ms 20000 >"$OUT/zaqar.json" || true
../shared/peers/zaqar/stop.sh 18971 >/dev/null || true

# Redis with fsync on every write
rdir=$(mktemp -d /tmp/marconi-compare-redis.XXXXXX)
taskset -c "$SERVER_CPU" redis-server --port 18972 --bind 127.0.0.1 --dir "$rdir" --appendonly yes \
  --appendfsync always --save "" --daemonize no >"$OUT/redis.log" 2>&1 &
r=$!
sleep 0.5
n=$((20000 * DURATION))
taskset -c "$LOADGEN_CPU" redis-benchmark -p 18972 -c "$CONNS" -n "$n" -d 256 -t lpush,rpop --csv >"$OUT/redis.csv" 2>/dev/null || true
kill $r; wait $r 2>/dev/null || true
rm -rf "$rdir"

read -r m_mps m_p50 m_p99 < <(mps "$OUT/marconi.json")
read -r z_mps z_p50 z_p99 < <(mps "$OUT/zaqar.json")
r_lpush=$(awk -F'"' '/LPUSH/ {print $4}' "$OUT/redis.csv")
r_rpop=$(awk -F'"' '/RPOP/ {print $4}' "$OUT/redis.csv")
echo "| server | messages/s | p50 µs | p99 µs |"
echo "|---|---|---|---|"
echo "| marconi ${MARCONI_ARGS:-} | $m_mps | $m_p50 | $m_p99 |"
echo "| Zaqar 23 (uWSGI 2 workers + redis) | $z_mps | $z_p50 | $z_p99 |"
echo "| Redis LPUSH, appendfsync always | ${r_lpush%.*} | | |"
echo "| Redis RPOP, appendfsync always | ${r_rpop%.*} | | |"
python3 -c "m,z,r=float('$m_mps'),float('$z_mps' or 0),float('${r_lpush:-0}'); print(f'marconi/Zaqar {m/z:.1f}x' if z else 'Zaqar: no result'); print(f'marconi/Redis LPUSH {m/r:.2f}x' if r else 'Redis: no result')"
echo "raw: $OUT"
