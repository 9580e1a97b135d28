#!/usr/bin/env bash
# Runs every test marconi has: formatting and lints, unit/integration/property tests of the whole
# workspace, then Zaqar's own v2 API tests (../shared/conformance) against a freshly started server.
# Exits non-zero on any failure. Usage: scripts/test.sh   (CONFORMANCE=0 skips the Zaqar suite)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --all-targets --locked

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
