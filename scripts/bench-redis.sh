#!/usr/bin/env bash
# Posts on the redis-cluster backend against the embedded store, same machine, same run: two
# marconi nodes (one shard each) on a local 3 masters + 3 replicas cluster (scripts/redis-cluster.sh,
# appendfsync always), for each `redis.ack` mode the cluster supports, and one marconi on its
# embedded store in `sync` durability. Two loadgen processes, one per node (half the connections
# each; the embedded row sends both to the one server), produce 256 B messages over 16 queues;
# REPEAT rounds, modes interleaved, medians of the summed rate and of the worse p99. Everything
# shares this machine's CPUs: the figures say how the backends compare here, not what a cluster of
# real machines does. /metrics of node A after each run is kept under OUT (batch sizes, WAITs).
#
# Usage: scripts/bench-redis.sh     (env: REPEAT=3 DURATION=5 CONNS=64 MODES="embedded replicas async")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/server-lib.sh
bench_setup bench-redis 18971
MODES=${MODES:-embedded replicas async}
cargo build --release --locked -p marconi -p loadgen >/dev/null 2>&1
bin=target/release/marconi
port_a=$PORT
port_b=$((PORT + 1))
export BASE_PORT=${BASE_PORT:-17400}

nodes=()
cleanup() {
  for pid in "${nodes[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  scripts/redis-cluster.sh stop "$OUT/cluster" >/dev/null 2>&1 || true
  rm -rf "$OUT/data"
}
trap cleanup EXIT
scripts/redis-cluster.sh start "$OUT/cluster" >"$OUT/cluster.log"
seeds=127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))

echo "# marconi on Redis Cluster against the embedded store, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
describe_machine
echo "- $(redis-server --version | cut -d' ' -f1-3); 3 masters + 3 replicas on loopback, appendonly yes, appendfsync always"
echo "- marconi: one shard per node, --log warn; loadgen: -w produce --message-bytes 256 --queues 16, $CONNS connections in all, --duration-s $DURATION, $REPEAT runs, medians"
echo

start_node() { # port, args...
  local port=$1; shift
  "$bin" serve --listen "127.0.0.1:$port" --shards 1 --log warn "$@" >"$OUT/node-$port.log" 2>&1 &
  nodes+=($!)
  for _ in $(seq 1 100); do grep -qs "listening on" "$OUT/node-$port.log" && return; sleep 0.1; done
  echo "marconi did not start" >&2; cat "$OUT/node-$port.log" >&2; exit 1
}
stop_nodes() {
  for pid in "${nodes[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  nodes=()
  rm -rf "$OUT/data"
}
# CPU seconds (user + system) the given processes have used so far.
cpu_s() {
  local ticks=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] && ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$ticks $(getconf CLK_TCK)" | awk '{printf "%.3f", $1 / $2}'
}
redis_pids() { cat "$OUT"/cluster/*/redis.pid; }
load() { # tag, port
  target/release/loadgen --url "http://127.0.0.1:$2" --no-progress --json --warmup-s 1 --duration-s "$DURATION" \
    -c $((CONNS / 2)) -w produce --message-bytes 256 --queues 16 --project-prefix "bench-$1" >"$OUT/$1.$2.json" || true
}

for i in $(seq 1 "$REPEAT"); do
  for mode in $MODES; do
    redis_before=$(cpu_s $(redis_pids))
    echo "$redis_before" >"$OUT/$mode.$i.cpu0"
    case $mode in
      embedded)
        start_node "$port_a" --durability sync --data-dir "$OUT/data"
        load "$mode.$i" "$port_a" & a=$!
        load "$mode.$i.b" "$port_a" & b=$!
        ;;
      *)
        for port in "$port_a" "$port_b"; do
          start_node "$port" --backend redis-cluster --redis-nodes "$seeds" --redis-ack "$mode"
        done
        load "$mode.$i" "$port_a" & a=$!
        load "$mode.$i.b" "$port_b" & b=$!
        ;;
    esac
    wait "$a" "$b"
    echo "$(cpu_s "${nodes[@]}") $(cpu_s $(redis_pids))" >"$OUT/$mode.$i.cpu"
    curl -s "http://127.0.0.1:$port_a/metrics" >"$OUT/$mode.$i.metrics" || true
    stop_nodes
  done
done

python3 - "$OUT" "$REPEAT" "$MODES" <<'PY'
import glob, json, statistics, sys
out, repeat, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
print('| store | posts/s (median of %d) | runs | vs embedded | p99 ms (worse node) | errors | CPU ms per 1000 posts: marconi + Redis |' % repeat)
print('|---|---|---|---|---|---|---|')
base = None
for mode in modes:
    rates, p99s, errors, cpu = [], [], 0, []
    for i in range(1, repeat + 1):
        runs = [json.load(open(f)) for f in glob.glob('%s/%s.%d.[0-9]*.json' % (out, mode, i)) +
                glob.glob('%s/%s.%d.b.*json' % (out, mode, i))]
        rates.append(sum(r['rps'] for r in runs))
        p99s.append(max(r['latency_us']['p99'] for r in runs) / 1000)
        errors += sum(r['error_count'] for r in runs)
        marconi_s, redis_s = map(float, open('%s/%s.%d.cpu' % (out, mode, i)).read().split())
        redis_s -= float(open('%s/%s.%d.cpu0' % (out, mode, i)).read())
        posts = sum(r['rps'] for r in runs) * (runs[0]['params']['duration_s'] + runs[0]['params']['warmup_s'])
        cpu.append((marconi_s * 1e6 / posts, redis_s * 1e6 / posts))
    med = statistics.median(rates)
    base = base or med
    name = 'embedded store, sync' if mode == 'embedded' else 'two nodes, redis.ack = %s' % mode
    m_ms = statistics.median(c[0] for c in cpu)
    r_ms = statistics.median(c[1] for c in cpu)
    print('| %s | %.0f | %s | %.2fx | %.1f | %d | %.0f + %.0f |' % (name, med, ', '.join('%.0f' % r for r in rates),
                                                                med / base, statistics.median(p99s), errors, m_ms, r_ms))
PY
