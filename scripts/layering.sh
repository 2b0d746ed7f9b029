#!/usr/bin/env bash
# Prints the module import graph (from each module's `import` lines) and fails on an import
# the layering does not allow, or on a Swift file over 400 lines. The allowed imports are written here, once; docs/design.md
# explains them. Run by scripts/test.sh (CI) before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Modules of ours each module may import. System and package modules are listed apart:
# NIO is allowed only where it says so.
declare -A allowed=(
  [AllotCore]=""
  [AllotCluster]="AllotCore"
  [AllotCoordination]="AllotCore AllotCluster"
  [AllotConfig]="AllotCore"
  [AllotSimulator]="AllotCore AllotCoordination"
  [AllotWire]="AllotCore AllotCluster"
  [AllotTransport]="AllotCore AllotWire"
  [AllotNode]="AllotCore AllotCluster AllotWire AllotTransport"
  [AllotCoordinator]="AllotCore AllotCluster AllotCoordination AllotConfig AllotWire AllotTransport"
  [AllotGateway]="AllotCore AllotConfig AllotWire AllotTransport AllotNode"
  # Envoy's rate-limit service (gRPC) beside a proxy, answered from a node's leases.
  [AllotRateLimit]="AllotCore AllotConfig AllotWire AllotTransport AllotNode"
  # Process telemetry (swift-otel's tracer, swift-metrics onto Prometheus): none of ours.
  [AllotTelemetry]=""
  # Tooling: the demo and mock upstream, the fuzzer.
  [AllotDemo]="AllotCore AllotConfig AllotWire AllotTransport AllotNode AllotCoordinator AllotGateway AllotSimulator"
  [AllotFuzzing]="AllotCore AllotCluster AllotWire AllotTransport AllotCoordinator"
  [AllotTesting]="AllotCore AllotWire AllotTransport AllotCoordinator"
  # The command-line tool: every product module, and its tools group (`allot demo`,
  # `mock-upstream`, `simulate`, `fault-proxy`, the coordinator's rig-only fault flags).
  [allot]="AllotCore AllotCluster AllotConfig AllotSimulator AllotWire AllotTransport AllotNode AllotCoordinator AllotGateway AllotRateLimit AllotTelemetry AllotDemo AllotTesting"
  [allot-fuzz]="AllotFuzzing"
  [allot-bench]="AllotCore AllotConfig AllotSimulator AllotWire AllotTransport AllotNode AllotCoordinator AllotRateLimit AllotTesting"
)
# Modules that must not import any NIO module (pure state machines and values).
pure="AllotCore AllotCluster AllotCoordination AllotConfig AllotSimulator"
# Tooling modules: no product module imports them.
tooling="AllotDemo AllotFuzzing AllotSimulator AllotTesting"
product="AllotCore AllotCluster AllotCoordination AllotConfig AllotWire AllotTransport AllotNode AllotCoordinator AllotGateway AllotRateLimit AllotTelemetry"

failed=0
for dir in Sources/*/; do
  m=$(basename "$dir")
  [[ -v allowed[$m] ]] || { echo "layering: module $m is not listed in scripts/layering.sh" >&2; failed=1; continue; }
  imports=$(grep -rhoE '^(@testable |@_exported |public |package |internal )?import [A-Za-z0-9_]+' "$dir" --include='*.swift' \
            | awk '{print $NF}' | sort -u)
  ours=$(echo "$imports" | grep -E '^Allot' || true)
  echo "$m -> $(echo $ours | tr ' ' ',' | sed 's/,/, /g')"
  for i in $ours; do
    if [[ " ${allowed[$m]} " != *" $i "* ]]; then
      echo "layering: $m imports $i, which it may not (allowed: ${allowed[$m]:-none})" >&2
      grep -rln "^.*import $i\$" "$dir" --include='*.swift' | sed 's/^/  /' >&2
      failed=1
    fi
  done
  if [[ " $pure " == *" $m "* ]] && echo "$imports" | grep -qE '^NIO'; then
    echo "layering: $m imports NIO ($(echo "$imports" | grep -E '^NIO' | tr '\n' ' ')); it must stay free of I/O" >&2
    failed=1
  fi
  if [[ " $product " == *" $m "* ]]; then
    for t in $tooling; do
      if [[ " $ours " == *" $t "* ]] || echo "$ours" | grep -qx "$t"; then
        echo "layering: product module $m imports the tooling module $t" >&2
        failed=1
      fi
    done
  fi
done
# No hand-written Swift file over 400 lines (generated protobuf code aside), and the
# coordinator's shell under 250: a file that grows past them is split by what it does.
while read -r n f; do
  [ "$f" = total ] && continue
  if [ "$n" -gt 400 ]; then echo "layering: $f has $n lines (at most 400)" >&2; failed=1; fi
done < <(find Sources Tests -name '*.swift' -not -path '*/Generated/*' -print0 | xargs -0 wc -l)
shell=$(wc -l < Sources/AllotCoordinator/CoordinatorCore.swift)
if [ "$shell" -ge 250 ]; then echo "layering: CoordinatorCore.swift has $shell lines (the shell stays under 250)" >&2; failed=1; fi
# A closure held bare in a generic lock (Mutex<(... -> ...)?>) is rewrapped in reabstraction
# thunks by every withLock, so each call gets slower and deeper: use HandlerSlot.
# (One-line declarations; closure typealiases too.)
locks='(Mutex|LockedValueBox|NIOLockedValueBox|OSAllocatedUnfairLock|ManagedCriticalState)'
aliases=$(grep -rhoE 'typealias [A-Za-z_][A-Za-z0-9_]* = [^=]*->' Sources | awk '{print $2}' | paste -sd'|' -)
if grep -rnE "$locks<[^=]*->" Sources ||
   { [ -n "$aliases" ] && grep -rnE "$locks<[^=]*\b($aliases)\b" Sources; }; then
  echo "layering: a closure held bare in a lock (above); keep it in HandlerSlot or a struct" >&2
  failed=1
fi
if [ $failed -ne 0 ]; then
  echo "layering: FAILED (see above)" >&2
  exit 1
fi
echo "layering: ok"
