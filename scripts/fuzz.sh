#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time: FUZZ_SECONDS each (default 15), so
# the whole run costs about targets x FUZZ_SECONDS plus one build. Fails on the first finding,
# whose reproducer libFuzzer leaves in fuzz/artifacts/TARGET/. Corpora grow in fuzz/corpus/TARGET/
# (ignored by git) and are reused by the next run.
#
# Usage: scripts/fuzz.sh [TARGET...]      FUZZ_SECONDS=600 scripts/fuzz.sh request_bodies
#
# The bounded CI run builds without a sanitizer (FUZZ_SANITIZER=none, the default): the targets
# drive safe parsers, where libFuzzer itself catches panics, stack overflows and timeouts, and the
# build is several times smaller and faster. Long campaigns set FUZZ_SANITIZER=address.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; .ci/run installs it). libFuzzer and the
# sanitizer flags need nightly features; the active (stable) toolchain provides them with
# RUSTC_BOOTSTRAP=1, so no nightly is needed and the build cache in fuzz/target is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-15}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== fuzz build"
if ! cargo fuzz build --sanitizer "$sanitizer" >"$log" 2>&1; then
  tail -40 "$log" >&2
  exit 1
fi
for target in "${targets[@]}"; do
  dict=()
  if [ -f "fuzz/dicts/$target.dict" ]; then
    dict=("-dict=fuzz/dicts/$target.dict")
  fi
  echo "== fuzz $target (${seconds}s)"
  # -max_len: room for whole request bodies and heads, small enough to keep executions fast.
  rc=0
  cargo fuzz run --sanitizer "$sanitizer" "$target" -- -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 "${dict[@]}" \
    >"$log" 2>&1 || rc=$?
  grep -E '^(Done |stat::number_of_executed_units)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -60 "$log" >&2
    echo "fuzz target $target found a problem (exit $rc): reproducer in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
