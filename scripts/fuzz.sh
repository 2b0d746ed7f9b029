#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [SEED] — fuzzes the coordinator's input path (frame decoder,
# session, coordinator core) for SECONDS (default 60) with allot-fuzz, the seeded random-frame
# driver, starting from Tests/fuzz-corpus. A crash keeps its input as fuzz-crashes/crash-*.bin
# (add it to Tests/fuzz-corpus once fixed: CI replays that directory) and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
seed=${2:-$(date +%s)}
swift build --product allot-fuzz >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if (cd "$work" && "$OLDPWD/.build/debug/allot-fuzz" --corpus "$OLDPWD/Tests/fuzz-corpus" --seconds "$seconds" --seed "$seed"); then
  exit 0
fi
mkdir -p fuzz-crashes
kept="fuzz-crashes/crash-$(date +%Y%m%dT%H%M%S)-seed$seed.bin"
cp "$work/fuzz-last-input.bin" "$kept" 2>/dev/null || true
echo "fuzz.sh: crash (seed $seed); its input is $kept" >&2
exit 1
