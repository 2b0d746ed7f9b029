#!/usr/bin/env bash
# bench/rls.sh [CALLS] — Envoy's ShouldRateLimit from a local gRPC client, in one run:
# `allot ratelimit-service`'s core answering from its leases, and the same gRPC service
# counting in a real Redis the way envoyproxy/ratelimit does (INCRBY + expiry, one round trip
# per descriptor). Builds allot-bench in release, starts a throwaway redis-server on loopback,
# writes bench/results/<date>-rls/results.md.
set -euo pipefail
CALLS=${1:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
command -v redis-server > /dev/null || { apt-get update -qq && apt-get install -y -qq redis-server > /dev/null; }
swift build -c release --product allot-bench 2>&1 | tail -1
OUT=$ROOT/bench/results/$(date +%Y-%m-%d)-rls
mkdir -p "$OUT"
PORT=16390
redis-server --port $PORT --save "" --appendonly no --daemonize yes --pidfile "$OUT/redis.pid" > /dev/null
trap 'redis-cli -p $PORT shutdown nosave > /dev/null 2>&1 || true; rm -f "$OUT/redis.pid"' EXIT
sleep 0.3
lines=$(timeout 600 "$ROOT/.build/release/allot-bench" rls --calls "$CALLS" --redis 127.0.0.1:$PORT)
echo "$lines" > "$OUT/rls.jsonl"
{
  echo "# ShouldRateLimit latency (bench/rls.sh $CALLS)"
  echo
  echo "- $(nproc) cores, $(uname -sr), $(redis-server --version | cut -d' ' -f1-3), commit $(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- one gRPC client on loopback, sequential calls on one HTTP/2 connection, one descriptor each, after 2,000 warm-up calls; client and server in one process (allot-bench)"
  echo
  echo "| service | calls | p50 µs | p99 µs | p99.9 µs |"
  echo "|---|---|---|---|---|"
  echo "$lines" | python3 -c '
import json, sys
for l in sys.stdin:
    o = json.loads(l)
    print("| %s | %s | %s | %s | %s |" % (o["mode"], o["calls"], o["p50_us"], o["p99_us"], o["p999_us"]))'
} > "$OUT/results.md"
cat "$OUT/results.md"
