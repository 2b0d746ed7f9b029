#!/usr/bin/env bash
# bench/run.sh [--quick] — Allot beside its peers' approaches on this machine, same workload,
# same run. Installs what it needs (redis-server, wrk) from Debian's packages, builds allot in
# release, and writes bench/results/<date>[-quick]/: results.md (tables), CSV files, SVG plots
# and machine.md. --quick finishes in under 5 minutes once built; the full run under 30.
#
#   1. accuracy in virtual time: every scenario × every strategy (allot simulate) at 4, 16, 64 nodes
#   2. accuracy and decision latency on real processes: 3 coordinators, 8 nodes, a real Redis
#      (redis-window, redis-bucket, redis-sync-100/500, static-split, allot) on the same traces
#   3. scaling: grants/s and memory of one coordinator with 10³…10⁶ budgets and 1…64 node connections
#   4. the gateway end to end: wrk against the gateway and the mock upstream side by side
#   5. (full run only) microbenchmarks: admit, reserve/settle, grant sizing, frame encode/decode, mallocs per op
#   6. (full run only) a real peer: LiteLLM's proxy from PyPI with its Redis-backed limits beside Allot's
#      gateway, same mock upstream, same load (bench/peers/litellm/run.sh: overhead and shared budgets)
set -euo pipefail
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
[ $# -le 1 ] && { [ $# -eq 0 ] || [ $QUICK = 1 ]; } || { echo "usage: bench/run.sh [--quick]" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
need=()
command -v redis-server > /dev/null || need+=(redis-server)
command -v wrk > /dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian's packages"
  (apt-get update -qq && apt-get install -y -qq "${need[@]}") > /dev/null
fi
echo "building allot (release)"
swift build -c release --product allot 2>&1 | tail -1
swift build -c release --product allot-bench 2>&1 | tail -1
BIN=$ROOT/.build/release/allot
BENCH=$ROOT/.build/release/allot-bench
OUT=$ROOT/bench/results/$(date +%Y-%m-%d)$([ $QUICK = 1 ] && echo -quick || true)
rm -rf "$OUT" && mkdir -p "$OUT/sim"
started=$(date +%s)
{
  echo "## Machine"
  echo
  echo "- $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB memory"
  echo "- $(uname -sr); $(swift --version 2>&1 | head -1)"
  echo "- $(redis-server --version | cut -d' ' -f1-3); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "- run: bench/run.sh $([ $QUICK = 1 ] && echo --quick) on $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} > "$OUT/machine.md"

echo "1/4 simulator"
if [ $QUICK = 1 ]; then NODES="4 16"; SIMSEC=10; else NODES="4 16 64"; SIMSEC=; fi
for n in $NODES; do
  for s in steady contention zipf shift burst runaway lossy tokens regions; do
    args=(simulate --scenario "$s" --json)
    [ "$s" = regions ] || args+=(--nodes "$n")
    [ -n "$SIMSEC" ] && args+=(--seconds $([ "$s" = tokens ] && echo 90 || echo "$SIMSEC")) # tokens: through its first burst (45–75 s)
    [ "$s" = regions ] && [ "$n" != "$(echo $NODES | cut -d' ' -f1)" ] && continue # one topology
    "$BIN" "${args[@]}" >> "$OUT/sim/sim-$n.jsonl"
  done
done

echo "2/4 real processes (Redis and Allot)"
if [ $QUICK = 1 ]; then
  ALLOT_BIN=$BIN ALLOT_BENCH_BIN=$BENCH bench/real/run.sh "$OUT" 6 "skewed shift burst" "allot redis-window redis-bucket redis-sync-100 static-split"
else
  ALLOT_BIN=$BIN ALLOT_BENCH_BIN=$BENCH bench/real/run.sh "$OUT" 20 "skewed shift burst tokens tokens-tight" "allot redis-window redis-bucket redis-sync-100 redis-sync-500 static-split"
fi

echo "3/4 scaling: budgets and node connections on one coordinator"
if [ $QUICK = 1 ]; then BUDGETS="1000 10000 100000"; CONNS="1 4 16"; SCALESEC=2; else BUDGETS="1000 10000 100000 1000000"; CONNS="1 4 16 64"; SCALESEC=4; fi
for b in $BUDGETS; do "$BENCH" scale --budgets "$b" --seconds "$SCALESEC" >> "$OUT/scaling.jsonl"; done
for c in $CONNS; do "$BENCH" scale --connections "$c" --seconds "$SCALESEC" >> "$OUT/scaling.jsonl"; done

echo "4/4 gateway end to end"
if [ -x bench/gateway/overhead.sh ]; then
  DURATION=$([ $QUICK = 1 ] && echo 3 || echo 10) ROUNDS=$([ $QUICK = 1 ] && echo 1 || echo 2) bench/gateway/overhead.sh > "$OUT/gateway.txt" 2>&1 || echo "gateway benchmark failed (see $OUT/gateway.txt)"
  { echo "## 4. The gateway end to end (wrk)"; echo
    echo "wrk against the mock upstream directly and through one gateway (coordinator over mTLS, audit on), alternating; 1 and 32 connections."
    echo; echo '```'; grep -E '^(direct|gateway) ' "$OUT/gateway.txt"; echo '```'; } > "$OUT/gateway.md"
fi

if [ $QUICK = 0 ]; then
  echo "5/5 microbenchmarks (ordo-one/benchmark in the bench package: admit, reserve/settle, grant sizing, frames, mallocs)"
  (cd bench && swift package --allow-writing-to-package-directory benchmark --no-progress --format markdown) > "$OUT/micro.txt" 2>&1 \
    || echo "microbenchmarks failed (see $OUT/micro.txt)"
  { echo "## 5. Microbenchmarks (ordo-one/benchmark)"; echo; grep -v -e '^Build' -e '^\[' "$OUT/micro.txt"; } > "$OUT/micro.md"
fi

if [ $QUICK = 0 ]; then
  echo "6/6 LiteLLM's proxy beside Allot's gateway"
  ALLOT_BIN=$BIN bench/peers/litellm/run.sh "$OUT" > "$OUT/litellm.log" 2>&1 || echo "LiteLLM comparison failed (see $OUT/litellm.log)"
fi

python3 bench/report/headline.py "$OUT" > "$OUT/headline.md"
python3 bench/report/report.py "$OUT"
echo "done in $(( $(date +%s) - started )) s (build not counted): $OUT/results.md"
