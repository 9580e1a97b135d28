#!/usr/bin/env bash
# What TLS costs: one marconi shard pinned to SERVER_CPU listening plain on PORT and TLS on
# PORT+1 (a fresh self-signed ECDSA P-256 certificate), driven by wrk on LOADGEN_CPU in the same
# run. Keep-alive ping and produce (one 256-byte message per POST) over both, alternating which
# goes first, medians of REPEAT runs; then new connections per second (one request per
# connection, `Connection: close`) over both, which for TLS is full handshakes per second on one
# shard. wrk's OpenSSL client can be slower at handshakes than the server, so the server's own
# CPU time per request (user + system, from /proc) is printed too: its inverse is what one shard
# could sustain. Prints a markdown table with the TLS / plain ratios.
#
# Usage: scripts/bench-tls.sh   (env: REPEAT=3 DURATION=5 CONNS=64 SERVER_CPU=0 LOADGEN_CPU=1
#                              DURABILITY=memory OUT=/tmp/marconi-tls.XXXX)
set -euo pipefail
cd "$(dirname "$0")/.."
DURABILITY=${DURABILITY:-memory}
. scripts/server-lib.sh
bench_setup tls 18960
command -v wrk >/dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 2; }
cargo build --release --locked -p marconi >/dev/null 2>&1

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1
server_args=(--tls-listen "127.0.0.1:$((PORT + 1))" --tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem"
  --set http.max_new_connections_per_second=10000000)

echo "# TLS against plain HTTP, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
describe_machine
echo "- $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(openssl version | cut -d' ' -f1-2); certificate: self-signed ECDSA P-256"
echo "- server: taskset -c $SERVER_CPU marconi serve --shards 1 --durability $DURABILITY, plain on :$PORT, TLS on :$((PORT + 1))"
echo "- keep-alive: taskset -c $LOADGEN_CPU wrk -t1 -c$CONNS -d${DURATION}s -s scripts/wrk/{ping,produce}.lua"
echo "- new connections: the same ping with -H 'Connection: close' (one request per connection)"
echo "- $REPEAT runs per cell, medians"
echo

trap stop_server EXIT
start_server "$DURABILITY"
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
run() { # name scheme port wrk-args...
  local f="$OUT/$1" scheme=$2 port=$3 before; shift 3
  before=$(ticks)
  taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "$scheme://127.0.0.1:$port" >"$f.out" 2>&1 || true
  echo $(( $(ticks) - before )) >"$f.ticks"
}
for i in $(seq 1 "$REPEAT"); do
  for wl in ping produce close; do
    args=(-s "scripts/wrk/$wl.lua")
    [ "$wl" = close ] && args=(-s scripts/wrk/ping.lua -H "Connection: close")
    if [ $((i % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
    for who in $order; do
      if [ "$who" = plain ]; then run "$wl.plain.$i" http "$PORT" "${args[@]}"
      else run "$wl.tls.$i" https "$((PORT + 1))" "${args[@]}"; fi
    done
  done
done
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^marconi_tls_handshakes' >"$OUT/handshakes.txt" || true
stop_server
trap - EXIT

python3 - "$OUT" "$REPEAT" "$(getconf CLK_TCK)" "$DURATION" <<'PY'
import re, statistics, sys
out, repeat, hz, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def rate(name):
    text = open(f"{out}/{name}.out").read()
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    rps = float(m.group(1)) if m else 0.0
    cpu_us = int(open(f"{out}/{name}.ticks").read()) / hz * 1e6 / max(1.0, rps * duration)
    return rps, errors, cpu_us
print("| workload | plain req/s | TLS req/s | TLS / plain | server CPU µs/req (plain / TLS) | errors (plain / TLS) |")
print("|---|---|---|---|---|---|")
for wl, label in [("ping", "ping, keep-alive"), ("produce", "produce, keep-alive"), ("close", "ping, new connection each (TLS: full handshake)")]:
    p = [rate(f"{wl}.plain.{i}") for i in range(1, repeat + 1)]
    t = [rate(f"{wl}.tls.{i}") for i in range(1, repeat + 1)]
    mp, mt = statistics.median(r[0] for r in p), statistics.median(r[0] for r in t)
    cp, ct = statistics.median(r[2] for r in p), statistics.median(r[2] for r in t)
    print(f"| {label} | {mp:,.0f} | {mt:,.0f} | {mt / mp if mp else 0:.2f}x | {cp:.0f} / {ct:.0f} | {sum(r[1] for r in p)} / {sum(r[1] for r in t)} |")
print()
print("server's own count: " + " ".join(l.strip() for l in open(f"{out}/handshakes.txt")))
print(f"raw results: {out}")
PY
