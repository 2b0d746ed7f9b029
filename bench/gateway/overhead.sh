#!/usr/bin/env bash
# Gateway overhead, side by side in one run: wrk against the mock upstream directly, then
# through one gateway node (coordinator over mTLS, audit trail on), alternating, same body.
# Loopback only; every wrk run is bounded (DURATION seconds). Usage:
#   bench/gateway/overhead.sh            # 10 s per run, 1 and 32 connections, 2 rounds
#   DURATION=5 ROUNDS=1 bench/gateway/overhead.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
swift build -c release --product allot >/dev/null
A=$PWD/.build/release/allot
D=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $D" || rm -rf "$D"; }
trap cleanup EXIT
bench_certs "$A" "$D/certs" gw-1
cat > "$D/allot.yaml" <<YAML
coordinator: {name: c1, listen: 127.0.0.1:17400, admin: 127.0.0.1:17401}
tls: {dir: certs}
tiers:
  - name: bench
    templates:
$BENCH_NEVER_BINDING
      - {name: month, scope: [consumer], unit: tokens, kind: quota, allowance: 1000000000000, window: month}
models:
  - {name: mini, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
gateway: {name: gw-1, listen: 127.0.0.1:18080, admin: 127.0.0.1:18081, upstream: "http://127.0.0.1:19000",
          coordinator: 127.0.0.1:17400, consumers: consumers.yaml, audit_dir: ${AUDIT_DIR:-audit}}
YAML
echo "consumers: [{id: bench, tier: bench, key_sha256: $($A hash-key sk-bench)}]" > "$D/consumers.yaml"
$A coordinator --config "$D/allot.yaml" --log-level error >/dev/null &
$A mock-upstream --listen 127.0.0.1:19000 --completion-tokens 64 >/dev/null &
sleep 1
$A gateway --config "$D/allot.yaml" --log-level error >/dev/null &
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18081/readyz && break; sleep 0.1; done

run() { # name url connections
  local out
  out=$(wrk -t1 -c"$3" -d"${DURATION}s" --latency -s bench/gateway/post.lua "$2")
  local p50 p99 rps non2xx
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  printf "%-8s c=%-3s p50 %-9s p99 %-9s req/s %-10s non-2xx %s\n" "$1" "$3" "$p50" "$p99" "$rps" "${non2xx:-0}"
}
for round in $(seq "$ROUNDS"); do
  for c in 1 32; do
    run direct http://127.0.0.1:19000/v1/chat/completions "$c"
    run gateway http://127.0.0.1:18080/v1/chat/completions "$c"
  done
done
