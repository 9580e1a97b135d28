#!/usr/bin/env bash
# Power-cut test of marconi's durability modes (not in CI: it boots a qemu guest per cut).
# Needs ../shared/powercut/setup.sh run once (as root). Builds the release binary, checks that it
# runs on the guest's glibc 2.36, then cuts the power under a produce/claim/delete load:
#   sync  — must lose nothing acknowledged and undo no acknowledged delete (exit 0);
#   none  — is expected to lose unflushed writes (exit 1 shows it).
# Usage: scripts/powercut.sh [CUTS] [extra powercut.py options, e.g. --seed 7 --hold 0]
set -euo pipefail
cd "$(dirname "$0")/.."
cuts="${1:-5}"
shift || true
cargo build --release --bin marconi
glibc=$(objdump -T target/release/marconi | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
echo "== binary needs ${glibc} (the guest has GLIBC_2.36)"
if [ "$(printf '%s\nGLIBC_2.36\n' "$glibc" | sort -V | tail -1)" != "GLIBC_2.36" ]; then
  echo "the binary needs a newer glibc than the guest's; build on bookworm or for musl" >&2
  exit 2
fi
payload=$(mktemp -d /tmp/marconi-powercut-payload.XXXXXX)
trap 'rm -rf "$payload"' EXIT
cp target/release/marconi scripts/powercut-payload/start.sh "$payload/"
echo "== sync: nothing acknowledged may be lost"
python3 -B scripts/powercut.py --mode sync --payload "$payload" --cuts "$cuts" "$@"
echo "== none: unflushed writes are expected to be lost"
set +e
python3 -B scripts/powercut.py --mode none --payload "$payload" --cuts 2 --segment-bytes 67108864 "$@"
none_status=$?
set -e
if [ "$none_status" -ne 1 ]; then
  echo "expected --durability none to lose acknowledged writes (exit 1), got exit $none_status" >&2
  exit 1
fi
echo "== power-cut test passed: sync lost nothing, none lost what it had not flushed"
