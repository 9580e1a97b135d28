#!/usr/bin/env bash
# Starts a fresh marconi (2 shards, so cross-shard paths run) on a free loopback port, runs
# Zaqar's v2 API tests against it (../shared/conformance/run.sh), stops the server, and exits
# with the suite's status. Needs ../shared/conformance/setup.sh to have run once.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin marconi
log=$(mktemp /tmp/marconi-conformance-server.XXXXXX.log)
ready=$(mktemp /tmp/marconi-conformance-ready.XXXXXX)
# A fresh, empty data directory: the suite assumes its projects start empty.
data=$(mktemp -d /tmp/marconi-conformance-data.XXXXXX)
target/debug/marconi serve --listen 127.0.0.1:0 --shards 2 --signed-url-secret-key conformance-secret \
  --data-dir "$data" --log warn >"$ready" 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  grep -q 'listening on' "$ready" && break
  sleep 0.1
done
addr=$(awk '/listening on/ {print $4; exit}' "$ready")
if [ -z "$addr" ]; then
  echo "marconi did not start; its log:" >&2
  cat "$log" >&2
  exit 1
fi
status=0
../shared/conformance/run.sh "http://$addr" || status=$?
# python-zaqarclient, as a newcomer would use it (its own project, so after the suite is fine).
client_venv=${MARCONI_ZAQARCLIENT_VENV:-$HOME/.cache/marconi-zaqarclient/venv}
if [ ! -x "$client_venv/bin/python" ] || ! "$client_venv/bin/python" -c 'import zaqarclient' 2>/dev/null; then
  python3 -m venv "$client_venv"
  "$client_venv/bin/pip" install --quiet python-zaqarclient
fi
"$client_venv/bin/python" scripts/zaqarclient_smoke.py "http://$addr" || status=1
kill -TERM "$pid"
wait "$pid" || { echo "marconi did not exit cleanly on SIGTERM" >&2; status=1; }
trap - EXIT
rm -rf "$data"
exit "$status"
