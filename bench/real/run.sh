#!/usr/bin/env bash
# bench/real/run.sh OUT SECONDS "TRACES" "STRATEGIES" — the real-process benchmark: a cluster
# of 3 coordinators, a redis-server, and 8 `allot-bench node` processes per run replaying the
# same trace against each strategy in turn; one result JSON per trace and strategy in OUT/real.
# Needs ALLOT_BIN and ALLOT_BENCH_BIN (release builds of allot and allot-bench), redis-server and redis-cli. Every process it starts is
# stopped on exit. Everything listens on loopback. ALLOT_BENCH_KEEP=1 keeps the work directory.
set -euo pipefail
OUT=$1; SECONDS_PER_RUN=$2; TRACES=$3; STRATEGIES=$4
BIN=${ALLOT_BIN:?set ALLOT_BIN to the allot binary}
BENCH=${ALLOT_BENCH_BIN:?set ALLOT_BENCH_BIN to the allot-bench binary}
HERE=$(cd "$(dirname "$0")" && pwd)
NODES=${ALLOT_BENCH_NODES:-8}
WORK=$(mktemp -d /tmp/allot-bench-real.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${ALLOT_BENCH_KEEP:-}" ]; then echo "kept: $WORK (raw attempts, node and coordinator logs)" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
mkdir -p "$OUT/real"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Redis, no persistence.
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no > "$WORK/redis.log" 2>&1 &
PIDS+=($!)

# Three coordinators (a cluster), the two budgets every strategy enforces.
cd "$WORK"
"$BIN" certs init --dir certs --trust-domain allot.bench > /dev/null
for c in 0 1 2; do "$BIN" certs issue --dir certs --role coordinator --name "c$c" --ip 127.0.0.1 > /dev/null; done
# The same node names in every run: each run's nodes are a restart of the last run's (a new
# incarnation in their hello), as a fleet's rolling restart would be.
for ((n = 0; n < NODES; n++)); do "$BIN" certs issue --dir certs --role node --name "gw-$n" > /dev/null; done
P=(); A=()
for c in 0 1 2; do P+=("$(free_port)"); A+=("$(free_port)"); done
SEEDS="127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}"
# Requests: ALLOT_BENCH_RATE per node (default 1,000/s), the limit 75% of what the fleet
# offers on average, the burst a fifth of a second of it. Tokens (LLM-like: the real count is
# known when the request ends, 0.5–8 s later; a bound of 1–2× it at admission): 40 requests/s
# per node of 50–5,000 tokens (~1,075 on average, ~344,000 tokens/s offered), a limit of
# 120,000 tokens/s; `tokens` with a burst of 10 s of it (1.2 M: token budgets are usually per
# minute, with a minute's burst), `tokens-tight` with 1 s (120,000) and 20 requests/s per node:
# reservations in flight (~500,000) then exceed the burst (see docs/performance.md).
RATE=${ALLOT_BENCH_RATE:-1000}
REQ_LIMIT=$(( RATE * NODES * 3 / 4 )); REQ_BURST=$(( REQ_LIMIT / 5 )); TOK_LIMIT=120000
cat > bench.yaml <<YAML
cluster: {seeds: [127.0.0.1:${P[0]}, 127.0.0.1:${P[1]}, 127.0.0.1:${P[2]}], protocol_period: 500ms, ping_timeout: 200ms, suspicion_timeout: 2s}
tls: {dir: certs}
lease: {ttl: 2s, refresh_interval: 200ms}
budgets:
  - {id: fleet, unit: requests, kind: rate, limit: $REQ_LIMIT, period: 1s, burst: $REQ_BURST}
  - {id: fleet-tokens, unit: tokens, kind: rate, limit: $TOK_LIMIT, period: 1s, burst: $(( TOK_LIMIT * 10 ))}
  - {id: fleet-tokens-tight, unit: tokens, kind: rate, limit: $TOK_LIMIT, period: 1s, burst: $TOK_LIMIT}
YAML
for c in 0 1 2; do
  "$BIN" coordinator --config bench.yaml --name "c$c" --listen "127.0.0.1:${P[$c]}" --admin "127.0.0.1:${A[$c]}" > "c$c.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 150); do
  ok=1
  for c in 0 1 2; do curl -fs "http://127.0.0.1:${A[$c]}/readyz" > /dev/null 2>&1 || ok=0; done
  redis-cli -p "$RPORT" ping > /dev/null 2>&1 || ok=0
  [ $ok = 1 ] && break
  sleep 0.2
done
[ $ok = 1 ] || { echo "coordinators or redis did not start; logs in $WORK" >&2; exit 1; }
sleep 2.5 # one lease TTL: the cluster's formation learning

for trace in $TRACES; do
  for strategy in $STRATEGIES; do
    sync=100; name=$strategy
    case $strategy in redis-sync-*) sync=${strategy#redis-sync-}; strategy=redis-sync ;; esac
    pattern=$trace
    case $trace in
      tokens) limit=$TOK_LIMIT; burst=$(( TOK_LIMIT * 10 )); rate=40; budget=fleet-tokens ;;
      tokens-tight) limit=$TOK_LIMIT; burst=$TOK_LIMIT; rate=20; budget=fleet-tokens-tight; pattern=tokens ;;
      *) limit=$REQ_LIMIT; burst=$REQ_BURST; rate=$RATE; budget=fleet ;;
    esac
    raw="$WORK/raw-$trace-$name"; mkdir -p "$raw"
    redis-cli -p "$RPORT" flushall > /dev/null
    start=$(( $(date +%s%3N) + 1500 ))
    pids=()
    for ((n = 0; n < NODES; n++)); do
      "$BENCH" node --strategy "$strategy" --pattern "$pattern" --index "$n" --fleet "$NODES" --rate "$rate" \
        --seconds "$SECONDS_PER_RUN" --limit "$limit" --burst "$burst" --seed 7 --out "$raw/attempts-$n.txt" \
        --redis "127.0.0.1:$RPORT" --sync-ms "$sync" --config bench.yaml --budget-id "$budget" --coordinator "$SEEDS" \
        --tls-dir certs --name "gw-$n" --start-at-ms "$start" > "$raw/node-$n.json" 2> "$raw/node-$n.err" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || { echo "a node failed in $trace/$name:" >&2; cat "$raw"/node-*.err >&2; exit 1; }; done
    python3 "$HERE/aggregate.py" "$raw" "$limit" "$burst" "$trace" "$name" "$OUT/real/$trace-$name.json"
    sleep 1.5 # let buckets refill and leases go back between runs
  done
done
