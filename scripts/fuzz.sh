#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [SEED] — fuzzes the coordinator's input path (frame decoder,
# session, coordinator core) for SECONDS (default 60) with libFuzzer: allot-fuzz built with
# -sanitize=fuzzer into .build-fuzz (every Swift module instrumented; a cold build takes a
# while), started from Tests/fuzz-corpus. New inputs libFuzzer finds go to fuzz-work/ (not the
# repo); a crash keeps its input in fuzz-crashes/ (add it to Tests/fuzz-corpus once fixed: CI
# replays that directory) and exits 1.
# ALLOT_FUZZ=seeded runs the seeded random-frame driver instead (no instrumented build).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
seed=${2:-$(date +%s)}
mkdir -p fuzz-crashes fuzz-work
if [ "${ALLOT_FUZZ:-libfuzzer}" = seeded ]; then
  swift build --product allot-fuzz >/dev/null
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if (cd "$work" && "$OLDPWD/.build/debug/allot-fuzz" --corpus "$OLDPWD/Tests/fuzz-corpus" --seconds "$seconds" --seed "$seed"); then
    exit 0
  fi
  kept="fuzz-crashes/crash-$(date +%Y%m%dT%H%M%S)-seed$seed.bin"
  cp "$work/fuzz-last-input.bin" "$kept" 2>/dev/null || true
  echo "fuzz.sh: crash (seed $seed); its input is $kept" >&2
  exit 1
fi
scratch=${ALLOT_FUZZ_BUILD:-.build-fuzz}
swift build --product allot-fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING --scratch-path "$scratch" >/dev/null
exec "$scratch/debug/allot-fuzz" -max_total_time="$seconds" -seed="$seed" -max_len=65536 -timeout=10 \
  -artifact_prefix=fuzz-crashes/ -print_final_stats=1 fuzz-work Tests/fuzz-corpus
