#!/usr/bin/env bash
# cluster/local/up.sh [C] [G] — starts C coordinators (a cluster over mutual TLS sharing one
# SQLite ledger), G gateways and one mock LLM upstream as separate processes on loopback,
# with freshly issued certificates and one deployment file. Prints every endpoint and the
# example API keys. cluster/local/down.sh stops exactly what this started (recorded PIDs).
#
# Environment: ALLOT_LOCAL_DIR (default cluster/local/run), ALLOT_BASE_PORT (default 17400),
# ALLOT_BIN (default: builds and uses .build/debug/allot), ALLOT_LEDGER (default sqlite:ledger.db;
# a postgres://USER@HOST:PORT/DB URL works too).
set -euo pipefail
C=${1:-3}
G=${2:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${ALLOT_LOCAL_DIR:-$ROOT/cluster/local/run}
BASE=${ALLOT_BASE_PORT:-17400}
LEDGER=${ALLOT_LEDGER:-sqlite:ledger.db}
[[ "$C" =~ ^[0-9]+$ && "$G" =~ ^[0-9]+$ && $C -ge 1 && $C -le 50 && $G -ge 0 && $G -le 50 ]] \
  || { echo "usage: $0 [COORDINATORS 1-50] [GATEWAYS 0-50]" >&2; exit 2; }
source "$ROOT/cluster/local/lib.sh"
refuse_if_running
find_bin
mkdir -p "$RUN"
cd "$RUN"
rm -rf certs logs ledger.db* && mkdir -p logs
: > pids

"$BIN" certs init --dir certs --trust-domain allot.local >/dev/null
for ((i = 0; i < C; i++)); do "$BIN" certs issue --dir certs --role coordinator --name "c$i" --ip 127.0.0.1 >/dev/null; done
for ((j = 0; j < G; j++)); do "$BIN" certs issue --dir certs --role node --name "gw-$j" >/dev/null; done
"$BIN" certs issue --dir certs --role admin --name ops >/dev/null

coord() { echo "127.0.0.1:$((BASE + $1))"; }
seeds=$(for ((i = 0; i < C; i++)); do printf '%s%s' "$([ $i -gt 0 ] && echo ', ')" "$(coord $i)"; done)
mock="127.0.0.1:$((BASE + 400))"

cat > allot.yaml <<YAML
# Written by cluster/local/up.sh: read by every coordinator and gateway of this cluster.
cluster:
  seeds: [$seeds]
  protocol_period: 500ms
  ping_timeout: 200ms
  suspicion_timeout: 2s
  join_timeout: 2s
ledger: $LEDGER
tls: {dir: certs}
lease: {ttl: 10s, refresh_interval: 1s}
tiers:
  - name: free
    templates:
      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 60, period: 1m, burst: 10}
      - {name: month, scope: [consumer], unit: tokens, kind: quota, allowance: 200000, window: month}
    entitlements: {models: [mini], max_tokens: 512}
  - name: pro
    templates:
      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 1200, period: 1m, burst: 60}
      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 600000, period: 1m, burst: 40000}
      - {name: spend, scope: [team], unit: micro_dollars, kind: quota, allowance: 20000000, window: month}
  - name: agent
    templates:
      - {name: inflight, scope: [consumer], kind: concurrency, limit: 3}
      - {name: day, scope: [consumer], unit: tokens, kind: quota, allowance: 500000, window: day}
models:
  - {name: mini, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
  - {name: large, input_usd_per_mtok: 2.5, output_usd_per_mtok: 10, max_output_tokens: 8192}
gateway:
  upstream: http://$mock
  coordinator: $(for ((i = 0; i < C; i++)); do printf '%s%s' "$([ $i -gt 0 ] && echo ',')" "$(coord $i)"; done)
  consumers: consumers.yaml
  audit_dir: audit
YAML

{
  echo "consumers:"
  echo "  - {id: alice, team: hobby, tenant: local, tier: free, key_sha256: $("$BIN" hash-key sk-local-alice)}"
  echo "  - {id: carol, team: research, tenant: local, tier: pro, key_sha256: $("$BIN" hash-key sk-local-carol)}"
  echo "  - {id: eve, team: bots, tenant: local, tier: agent, key_sha256: $("$BIN" hash-key sk-local-eve)}"
} > consumers.yaml

launch mock mock-upstream --listen "$mock" --latency-ms 20
for ((i = 0; i < C; i++)); do
  launch "c$i" coordinator --config allot.yaml --name "c$i" --listen "$(coord $i)" --admin "127.0.0.1:$((BASE + 100 + i))"
done
for ((j = 0; j < G; j++)); do
  launch "gw-$j" gateway --config allot.yaml --name "gw-$j" --listen "127.0.0.1:$((BASE + 200 + j))" --admin "127.0.0.1:$((BASE + 300 + j))"
done

# Wait (bounded) until every coordinator reports ready: listening, ledger open, view formed.
wait_ready $(for ((i = 0; i < C; i++)); do echo $((BASE + 100 + i)); done) $(for ((j = 0; j < G; j++)); do echo $((BASE + 300 + j)); done)

echo "Allot local cluster in $RUN (logs in logs/, PIDs in pids)"
for ((i = 0; i < C; i++)); do
  echo "  coordinator c$i   mTLS $(coord $i)   admin http://127.0.0.1:$((BASE + 100 + i))/metrics"
done
for ((j = 0; j < G; j++)); do
  echo "  gateway gw-$j     http://127.0.0.1:$((BASE + 200 + j))/v1/chat/completions   admin http://127.0.0.1:$((BASE + 300 + j))/metrics"
done
echo "  mock upstream     http://$mock"
echo "  ledger            $LEDGER"
echo "API keys: sk-local-alice (free), sk-local-carol (pro), sk-local-eve (agent)"
echo "Try: curl -s http://127.0.0.1:$((BASE + 200))/v1/chat/completions -H 'Authorization: Bearer sk-local-carol' \\"
echo "       -d '{\"model\":\"mini\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
echo "     $BIN status --coordinator $(coord 0) --tls-dir $RUN/certs"
echo "Stop: cluster/local/down.sh"
