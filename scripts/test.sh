#!/usr/bin/env bash
# Runs every test marconi has: formatting and lints, unit/integration/property tests of the whole
# workspace, every fuzz target for a bounded time, then Zaqar's own v2 API tests
# (../shared/conformance) against a freshly started server.
# Exits non-zero on any failure. Usage: scripts/test.sh   (CONFORMANCE=0 skips the Zaqar suite,
# FUZZ=0 the fuzz targets; FUZZ_SECONDS sets the time per target, default 15)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

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

conformance=../shared/conformance
if [ ! -x "$conformance/run.sh" ]; then
  echo "conformance suite not found at $conformance" >&2
  exit 1
fi
echo "== Zaqar v2 conformance suite"
"$conformance/setup.sh"
scripts/conformance.sh
