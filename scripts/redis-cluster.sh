#!/usr/bin/env bash
# A local Redis Cluster for the redis-cluster backend: MASTERS masters x REPLICAS replicas on
# 127.0.0.1, ports BASE_PORT.. (cluster bus on port + 10000), AOF fsync always, node timeout 1 s.
# Each node runs in DIR/PORT with its pid file there; `stop` kills exactly those PIDs.
#
# Usage: scripts/redis-cluster.sh start|stop|status [DIR]
#   BASE_PORT=7000 MASTERS=3 REPLICAS=1 (defaults); DIR defaults to ${TMPDIR:-/tmp}/marconi-redis-cluster
#   start prints the seed list:  redis.nodes = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"
#   and its flag form (--redis-nodes ...). Needs redis-server and redis-cli (apt-get install redis-server redis-tools).
set -euo pipefail

cmd=${1:-}
dir=${2:-${TMPDIR:-/tmp}/marconi-redis-cluster}
base=${BASE_PORT:-7000}
masters=${MASTERS:-3}
replicas=${REPLICAS:-1}
count=$((masters * (1 + replicas)))
ports=()
for ((i = 0; i < count; i++)); do ports+=($((base + i))); done

die() { echo "redis-cluster.sh: $*" >&2; exit 1; }

# The PID in DIR/PORT/redis.pid, if that process is alive and is the redis-server of that port.
live_pid() {
  local port=$1 file="$dir/$1/redis.pid" pid cmdline
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *redis-server*:"$port"* ]] || return 1
  echo "$pid"
}

seeds() {
  local list=() i
  for ((i = 0; i < masters; i++)); do list+=("127.0.0.1:${ports[$i]}"); done
  (IFS=,; echo "${list[*]}")
}

wait_for() { # what, tries of 0.1 s, command...
  local what=$1 tries=$2
  shift 2
  for ((t = 0; t < tries; t++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out waiting for $what"
}

cluster_ok() {
  local port text
  for port in "${ports[@]}"; do
    text=$(redis-cli -p "$port" cluster info) || return 1
    [[ "$text" == *cluster_state:ok* ]] || return 1
    text=$(redis-cli -p "$port" info replication) || return 1
    if [[ "$text" == *role:slave* && "$text" != *master_link_status:up* ]]; then return 1; fi
  done
}

start() {
  command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
  command -v redis-cli >/dev/null || die "redis-cli is missing (apt-get install redis-tools)"
  [ "$masters" -ge 3 ] || die "MASTERS must be at least 3"
  mkdir -p "$dir"
  local port fresh=1
  for port in "${ports[@]}"; do
    if live_pid "$port" >/dev/null; then die "a node of $dir already runs on port $port: stop it first"; fi
    if redis-cli -p "$port" ping >/dev/null 2>&1; then die "port $port is taken by another process"; fi
    [ -f "$dir/$port/nodes.conf" ] && fresh=0
  done
  for port in "${ports[@]}"; do
    mkdir -p "$dir/$port"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
      --cluster-require-full-coverage no --appendonly yes --appendfsync always --save "" \
      --protected-mode no --daemonize yes --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log"
  done
  for port in "${ports[@]}"; do
    wait_for "port $port to answer PING" 100 redis-cli -p "$port" ping
  done
  if [ "$fresh" = 1 ]; then
    local addrs=()
    for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes >"$dir/create.log" 2>&1 \
      || { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  wait_for "cluster_state:ok on every node" 600 cluster_ok
  echo "redis.nodes = \"$(seeds)\""
  echo "--redis-nodes $(seeds)"
}

stop() {
  local port pid stopped=()
  for port in "${ports[@]}"; do
    if pid=$(live_pid "$port"); then
      kill "$pid"
      stopped+=("$pid")
    fi
  done
  for pid in "${stopped[@]}"; do
    for ((t = 0; t < 100; t++)); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  echo "stopped ${#stopped[@]} node(s) of $dir"
}

status() {
  local port pid state any=1
  for port in "${ports[@]}"; do
    if pid=$(live_pid "$port"); then
      any=0
      state=$(redis-cli -p "$port" cluster info 2>/dev/null | grep '^cluster_state' | tr -d '\r' || true)
      echo "127.0.0.1:$port pid $pid $(redis-cli -p "$port" role 2>/dev/null | head -1) ${state:-no answer}"
    else
      echo "127.0.0.1:$port not running"
    fi
  done
  [ "$any" = 0 ] && echo "redis.nodes = \"$(seeds)\""
  return "$any"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
