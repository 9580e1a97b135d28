# Sourced by the benchmark scripts (bench*.sh, vs-wrk.sh): one marconi shard pinned to
# SERVER_CPU on 127.0.0.1:PORT with a fresh data directory under OUT, started and stopped the
# same way everywhere. `start_server DURABILITY` sets $server (its pid); `stop_server` ends it
# and removes the data (the array server_args, when set, adds flags); `describe_machine` prints the lines every result table starts with.

# The knobs every benchmark script takes from the environment, with their defaults; a script
# presets any default of its own before calling. `bench_setup NAME PORT` also makes $OUT.
bench_setup() {
  REPEAT=${REPEAT:-3}
  DURATION=${DURATION:-5}
  CONNS=${CONNS:-64}
  SERVER_CPU=${SERVER_CPU:-0}
  LOADGEN_CPU=${LOADGEN_CPU:-1}
  PORT=${PORT:-$2}
  OUT=${OUT:-$(mktemp -d "/tmp/marconi-$1.XXXXXX")}
  mkdir -p "$OUT"
}

server=
start_server() {
  rm -rf "$OUT/data"
  taskset -c "$SERVER_CPU" target/release/marconi serve --listen "127.0.0.1:$PORT" --shards 1 --cpus "$SERVER_CPU" \
    --durability "$1" --data-dir "$OUT/data" --log warn ${server_args[@]+"${server_args[@]}"} >"$OUT/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do grep -qs "listening on" "$OUT/server.log" && return; sleep 0.1; done
  echo "server did not start" >&2; cat "$OUT/server.log" >&2; exit 1
}

stop_server() {
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  server=
  rm -rf "$OUT/data"
}

describe_machine() {
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB; kernel $(uname -r)"
  echo "- commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
}
