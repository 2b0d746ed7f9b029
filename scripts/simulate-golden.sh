#!/usr/bin/env bash
# scripts/simulate-golden.sh [--quick] [--update] — `allot simulate` (every scenario, every
# strategy, 16 nodes, seeds 1 and 7) must print byte-identical output to the committed copy in
# Tests/golden/: a refactoring of the engine, the simulator or the coordinator changes no
# number. The full run is the issue's check (`swift run -c release allot simulate`: ~1 min per
# seed in release, ~4 in debug); --quick runs every scenario for 2 virtual seconds (~15 s per
# seed in debug) and is what CI runs. --update rewrites the copies (only for a change that is
# meant to move the numbers; say so in the commit). ALLOT_BIN picks the binary (default: the
# release build when there is one, else the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; update=0
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    --update) update=1 ;;
    *) echo "usage: $0 [--quick] [--update]" >&2; exit 2 ;;
  esac
done
bin=${ALLOT_BIN:-}
if [ -z "$bin" ]; then
  if [ $quick = 0 ] && [ -x .build/release/allot ]; then bin=.build/release/allot; else bin=.build/debug/allot; fi
fi
[ -x "$bin" ] || { echo "simulate-golden: no allot binary at $bin (swift build first)" >&2; exit 2; }
failed=0
for seed in 1 7; do
  if [ $quick = 1 ]; then
    name=Tests/golden/simulate-quick-seed$seed.txt; extra=(--seconds 2)
  else
    name=Tests/golden/simulate-seed$seed.txt; extra=()
  fi
  out=$(mktemp)
  "$bin" simulate --seed "$seed" --nodes 16 "${extra[@]}" > "$out"
  if [ $update = 1 ]; then
    mv "$out" "$name"; echo "simulate-golden: wrote $name"
  elif cmp -s "$out" "$name"; then
    echo "simulate-golden: seed $seed identical to $name"; rm -f "$out"
  else
    echo "simulate-golden: seed $seed differs from $name:" >&2
    diff "$name" "$out" | head -20 >&2 || true
    rm -f "$out"; failed=1
  fi
done
exit $failed
