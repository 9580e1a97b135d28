#!/usr/bin/env bash
# What authentication costs: ping and produce with no auth, a marconi token (auth.mode = token)
# and a cached Keystone token (auth.mode = keystone against the fake Keystone of
# scripts/zaqarclient_keystone.py), in one run. Server: one shard on SERVER_CPU; loadgen on
# LOADGEN_CPU; each (mode, workload) REPEAT times, modes interleaved, medians reported with the
# ratio to no auth. Raw JSON under OUT.
#
# Usage: scripts/bench-auth.sh     (env: REPEAT=3 DURATION=5 CONNS=64 SERVER_CPU=0 LOADGEN_CPU=1)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/server-lib.sh
bench_setup bench-auth 18961
cargo build --release --locked -p marconi -p loadgen >/dev/null 2>&1
bin=target/release/marconi
url=http://127.0.0.1:$PORT

python3 scripts/zaqarclient_keystone.py --keystone-only >"$OUT/keystone.url" 2>"$OUT/keystone.log" &
keystone=$!
server=
cleanup() {
  [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  kill "$keystone" 2>/dev/null || true
  rm -rf "$OUT/data"
}
trap cleanup EXIT
for _ in $(seq 1 100); do [ -s "$OUT/keystone.url" ] && break; sleep 0.1; done
ks_url=$(cat "$OUT/keystone.url")
ks_token=$(curl -si -X POST "$ks_url/v3/auth/tokens" -H 'Content-Type: application/json' \
  -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"bench","password":"bench-pw"}}}}}' \
  | tr -d '\r' | awk -F': ' 'tolower($1) == "x-subject-token" {print $2}')
"$bin" token keygen --keys-file "$OUT/keys.toml" --id bench >/dev/null
mrc_token=$("$bin" token issue --keys-file "$OUT/keys.toml" --project loadgen-0 2>/dev/null)

echo "# marconi authentication benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'); server: taskset -c $SERVER_CPU, 1 shard, in memory"
echo "- loadgen: taskset -c $LOADGEN_CPU, -c $CONNS, --duration-s $DURATION, $REPEAT runs each, modes interleaved, medians"
echo

start() { # mode
  local args=()
  case $1 in
    token) args=(--auth token --auth-keys-file "$OUT/keys.toml") ;;
    keystone) args=(--auth keystone --set "auth.keystone.url=$ks_url/v3" --set auth.keystone.service_token=marconi-service-token) ;;
  esac
  taskset -c "$SERVER_CPU" "$bin" serve --listen "127.0.0.1:$PORT" --shards 1 --cpus "$SERVER_CPU" --log warn \
    "${args[@]}" >"$OUT/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do grep -q 'listening on' "$OUT/server.log" && return; sleep 0.1; done
  echo "server did not start" >&2; cat "$OUT/server.log" >&2; exit 1
}
stop() { kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; server=; }
header() {
  case $1 in
    none) echo "X-Trace: none" ;;
    token) echo "X-Auth-Token: $mrc_token" ;;
    keystone) echo "X-Auth-Token: $ks_token" ;;
  esac
}
for i in $(seq 1 "$REPEAT"); do
  for mode in none token keystone; do
    start "$mode"
    for w in ping produce; do
      case $w in
        ping) wargs=(-w mixed --mix ping=1) ;;
        produce) wargs=(-w produce --message-bytes 256 --batch 1) ;;
      esac
      taskset -c "$LOADGEN_CPU" target/release/loadgen --url "$url" --cpus "$LOADGEN_CPU" --no-progress --json \
        --warmup-s 1 --duration-s "$DURATION" -c "$CONNS" --header "$(header "$mode")" "${wargs[@]}" \
        >"$OUT/$mode.$w.$i.json" || true
    done
    stop
  done
done
python3 - "$OUT" "$REPEAT" <<'PY'
import json, statistics, sys
out, repeat = sys.argv[1], int(sys.argv[2])
print('| workload | mode | req/s (median of %d) | runs | vs none | errors | p50 us |' % repeat)
print('|---|---|---|---|---|---|---|')
for w in ('ping', 'produce'):
    base = None
    for mode in ('none', 'token', 'keystone'):
        runs = [json.load(open('%s/%s.%s.%d.json' % (out, mode, w, i))) for i in range(1, repeat + 1)]
        rates = [r['rps'] for r in runs]
        med = statistics.median(rates)
        base = base or med
        p50 = statistics.median(r['latency_us']['p50'] for r in runs)
        print('| %s | %s | %.0f | %s | %.3f | %d | %s |' % (w, mode, med, ', '.join('%.0f' % x for x in rates),
                                                         med / base, sum(r['error_count'] for r in runs), p50))
PY
