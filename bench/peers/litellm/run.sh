#!/usr/bin/env bash
# bench/peers/litellm/run.sh OUT — LiteLLM's proxy (PyPI, its Redis-backed rpm/tpm limits) beside
# Allot's gateway, in front of the same mock upstream, under the same load, in one run. Writes
# OUT/litellm.md (the table) and OUT/litellm.txt (raw numbers). Loopback only; every load run is
# bounded in time. Started and stopped here: redis-server, the mock, one Allot coordinator and
# two gateways, two LiteLLM proxies sharing the Redis.
#
#   1. overhead: wrk (1 thread, POST of bench/gateway/post.lua) at 1 and 32 connections against
#      the mock directly, through Allot's gateway and through LiteLLM's proxy, alternating.
#   2. shared budgets: T tokens, then R requests (Allot: a quota; LiteLLM: the deployment's tpm, then rpm, all
#      inside one calendar minute) spent by WORKERS clients on each of the two instances for
#      BUDGET_SECONDS; tokens admitted are summed from the answers (the upstream's usage).
#
# Environment: ALLOT_BIN (default: builds .build/release/allot), LITELLM_VENV (default
# .build/litellm-venv; created with pip install 'litellm[proxy]==1.80.0' redis if missing),
# DURATION (wrk seconds, default 8), BUDGET_TOKENS (default 20000), BUDGET_REQUESTS (default 240), WORKERS (default 16),
# BUDGET_SECONDS (default 20).
set -euo pipefail
OUT=${1:?usage: bench/peers/litellm/run.sh OUT}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$ROOT"
source bench/lib.sh
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); : > "$OUT/litellm.txt"
DURATION=${DURATION:-8}
T=${BUDGET_TOKENS:-20000}
R=${BUDGET_REQUESTS:-240}
WORKERS=${WORKERS:-16}
BUDGET_SECONDS=${BUDGET_SECONDS:-20}
VENV=${LITELLM_VENV:-$ROOT/.build/litellm-venv}
if [ ! -x "$VENV/bin/litellm" ]; then
  echo "installing LiteLLM's proxy from PyPI into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'litellm[proxy]==1.80.0' redis
fi
if [ -z "${ALLOT_BIN:-}" ]; then swift build -c release --product allot 2>&1 | tail -1; ALLOT_BIN=$ROOT/.build/release/allot; fi
A=$ALLOT_BIN
for tool in wrk redis-server; do command -v $tool > /dev/null || { echo "$tool is missing: apt-get install -y ${tool/-server/}" >&2; exit 1; }; done

D=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $D" || rm -rf "$D"; }
trap cleanup EXIT
MOCK=127.0.0.1:19300; REDIS=16399; LL=(14300 14301); GW=(18300 18301)

redis-server --port $REDIS --bind 127.0.0.1 --save '' --appendonly no > "$D/redis.log" 2>&1 &
"$A" mock-upstream --listen $MOCK --completion-tokens 64 > "$D/mock.log" 2>&1 &

# Allot: one coordinator, two gateway nodes. "bench" has limits that never bind; "tight" a quota of T tokens.
bench_certs "$A" "$D/certs" gw-0 gw-1
cat > "$D/allot.yaml" <<YAML
coordinator: {name: c1, listen: 127.0.0.1:17300, admin: 127.0.0.1:17301}
tls: {dir: certs}
tiers:
  - name: bench
    templates:
$BENCH_NEVER_BINDING
  - name: tight
    templates:
      - {name: tokens, scope: [consumer], unit: tokens, kind: quota, allowance: $T, window: day}
  - name: tight-requests
    templates:
      - {name: requests, scope: [consumer], unit: requests, kind: quota, allowance: $R, window: day}
models:
  - {name: mini, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
  - {name: tight, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
  - {name: tight-requests, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
gateway: {upstream: "http://$MOCK", coordinator: 127.0.0.1:17300, consumers: consumers.yaml, audit_dir: audit}
YAML
cat > "$D/consumers.yaml" <<YAML
consumers:
  - {id: bench, tier: bench, key_sha256: $($A hash-key sk-bench)}
  - {id: tight, tier: tight, key_sha256: $($A hash-key sk-tight)}
  - {id: tight-requests, tier: tight-requests, key_sha256: $($A hash-key sk-tight-requests)}
YAML
(cd "$D" && exec "$A" coordinator --config allot.yaml --log-level error > coordinator.log 2>&1) &
sleep 1
for i in 0 1; do
  (cd "$D" && exec "$A" gateway --config allot.yaml --name gw-$i --listen 127.0.0.1:${GW[$i]} \
     --admin 127.0.0.1:$((GW[$i] + 100)) --log-level error > gw-$i.log 2>&1) &
done

# LiteLLM: two proxies, one Redis, usage-based routing v2 (its Redis-backed rpm/tpm per deployment).
cat > "$D/litellm.yaml" <<YAML
model_list:
  - model_name: mini
    litellm_params: {model: openai/mini, api_base: "http://$MOCK/v1", api_key: sk-upstream, rpm: 100000000, tpm: 100000000000}
  - model_name: tight
    litellm_params: {model: openai/tight, api_base: "http://$MOCK/v1", api_key: sk-upstream, rpm: 100000000, tpm: $T}
  - model_name: tight-requests
    litellm_params: {model: openai/tight-requests, api_base: "http://$MOCK/v1", api_key: sk-upstream, rpm: $R, tpm: 100000000000}
router_settings: {routing_strategy: usage-based-routing-v2, redis_host: 127.0.0.1, redis_port: $REDIS, enable_pre_call_checks: true}
litellm_settings: {telemetry: false, drop_params: true}
general_settings: {master_key: sk-bench}
YAML
for i in 0 1; do
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR "$VENV/bin/litellm" --config "$D/litellm.yaml" \
    --host 127.0.0.1 --port ${LL[$i]} --num_workers 1 --telemetry False > "$D/litellm-$i.log" 2>&1 &
done
ready() { for _ in $(seq 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done; echo "not ready: $1" >&2; exit 1; }
for i in 0 1; do ready http://127.0.0.1:$((GW[$i] + 100))/readyz; ready http://127.0.0.1:${LL[$i]}/health/liveliness; done

# LiteLLM's master key is sk-bench, so post.lua's request is the same for all three.
wrkrun() { # name url connections
  local out; out=$(wrk -t1 -c"$3" -d"${DURATION}s" --latency -s bench/gateway/post.lua "$2/v1/chat/completions")
  printf "%s c=%s p50 %s p99 %s rps %s non2xx %s\n" "$1" "$3" \
    "$(echo "$out" | awk '$1=="50%"{print $2}')" "$(echo "$out" | awk '$1=="99%"{print $2}')" \
    "$(echo "$out" | awk '/Requests\/sec/{print $2}')" "$(echo "$out" | awk '/Non-2xx/{print $NF}' | grep . || echo 0)"
}
echo "1/2 overhead: direct, Allot, LiteLLM (wrk, ${DURATION}s each, 1 and 32 connections)"
for c in 1 32; do
  for t in "direct http://$MOCK" "allot http://127.0.0.1:${GW[0]}" "litellm http://127.0.0.1:${LL[0]}"; do
    wrkrun $t $c | tee -a "$OUT/litellm.txt"
  done
done

# Each LiteLLM budget run starts early in a calendar minute, so its per-minute window is one window.
echo "2/2 shared budgets ($T tokens; $R requests): $WORKERS clients on each of two instances, ${BUDGET_SECONDS}s"
budget() { # system unit url0 url1 key model
  [ "$1" = litellm ] && while [ $((10#$(date +%S) + ${BUDGET_SECONDS%.*})) -gt 55 ]; do sleep 1; done
  printf "%s budget-%s %s\n" "$1" "$2" "$("$VENV/bin/python" bench/peers/litellm/load.py --url "$3" --url "$4" \
    --key "$5" --model "$6" --workers "$WORKERS" --seconds "$BUDGET_SECONDS")" | tee -a "$OUT/litellm.txt"
}
budget allot tokens http://127.0.0.1:${GW[0]} http://127.0.0.1:${GW[1]} sk-tight tight
budget litellm tokens http://127.0.0.1:${LL[0]} http://127.0.0.1:${LL[1]} sk-bench tight
budget allot requests http://127.0.0.1:${GW[0]} http://127.0.0.1:${GW[1]} sk-tight-requests tight-requests
budget litellm requests http://127.0.0.1:${LL[0]} http://127.0.0.1:${LL[1]} sk-bench tight-requests
sleep 2 # LiteLLM's counters in Redis (per deployment and minute; global_router: = its router's success counters)
for k in $(redis-cli -p $REDIS --scan --pattern '*openai/tight*'); do
  echo "redis $k $(redis-cli -p $REDIS get "$k")" | tee -a "$OUT/litellm.txt"
done
{ echo "## 6. LiteLLM's proxy beside Allot's gateway (bench/peers/litellm/run.sh)"; echo
  echo "Same mock upstream, same machine, same run. Overhead: wrk (1 thread, ${DURATION} s per run) against the mock, one Allot gateway"
  echo "(coordinator over mTLS, audit on) and one LiteLLM proxy ($("$VENV/bin/pip" show litellm | awk '/^Version/{print $2}'), 1 worker, usage-based-routing-v2 on Redis)."
  echo "Budgets: $WORKERS closed-loop clients on each of two instances for ${BUDGET_SECONDS} s, inside one calendar minute for LiteLLM."; echo
  "$VENV/bin/python" bench/peers/litellm/table.py "$OUT/litellm.txt" "$T" "$R"; } > "$OUT/litellm.md"
cat "$OUT/litellm.md"
