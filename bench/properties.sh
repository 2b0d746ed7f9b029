#!/usr/bin/env bash
# bench/properties.sh [SEEDS] — the long property run: invariant 1 (never over any cap) for every
# scenario over SEEDS random fleets each (default 1,000; `swift test` alone runs 200, CI's
# scripts/test.sh 64), then the full simulator golden check (seeds 1 and 7, 16 nodes), both on
# the debug build; ~8 s per 100 seeds per scenario here (1,000 seeds: ~11 min), the golden ~9 min.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1000}
case $seeds in ''|*[!0-9]*|0*) echo "usage: bench/properties.sh [SEEDS > 0]" >&2; exit 2 ;; esac
swift build --build-tests 2>&1 | tail -1
ALLOT_PROPERTY_SEEDS=$seeds swift test --skip-build --filter 'AllotSimulatorTests.PropertyTests'
ALLOT_BIN=.build/debug/allot bash scripts/simulate-golden.sh
