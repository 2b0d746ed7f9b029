#!/usr/bin/env bash
# cluster/regions/up.sh — two regions and a global cluster on loopback, as separate processes:
# a global cluster of 2 coordinators (SQLite ledger), regions `eu` and `us` of 2 coordinators
# and 1 gateway each, and a mock LLM. Team spend is a global quota (reach: global): both
# regions' gateways draw on one worldwide allowance; request rates are regional. Region `us`
# is ALLOT_REGION_LATENCY_MS (default 60) ± 20 ms each way from the global cluster (injected in
# its upstream link; `kill -USR1` on its coordinators cuts it, `-USR2` heals).
# Stop with: ALLOT_LOCAL_DIR=cluster/regions/run cluster/local/down.sh
#
# Environment: ALLOT_LOCAL_DIR (default cluster/regions/run), ALLOT_BASE_PORT (default 18400),
# ALLOT_BIN (default: builds and uses .build/debug/allot).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${ALLOT_LOCAL_DIR:-$ROOT/cluster/regions/run}
BASE=${ALLOT_BASE_PORT:-18400}
LAT=${ALLOT_REGION_LATENCY_MS:-60}
[[ "$LAT" =~ ^[0-9]+$ && $LAT -ge 20 ]] || { echo "ALLOT_REGION_LATENCY_MS must be a whole number ≥ 20" >&2; exit 2; }
source "$ROOT/cluster/local/lib.sh"
refuse_if_running
find_bin
mkdir -p "$RUN"
cd "$RUN"
rm -rf certs logs audit-* ledger.db* && mkdir -p logs
: > pids

names=(g0 g1 eu0 eu1 us0 us1)
port() { for i in "${!names[@]}"; do [ "${names[$i]}" = "$1" ] && echo $((BASE + i)); done; }
admin() { echo $(($(port "$1") + 100)); }
"$BIN" certs init --dir certs --trust-domain allot.local >/dev/null
for c in "${names[@]}"; do "$BIN" certs issue --dir certs --role coordinator --name "$c" --ip 127.0.0.1 >/dev/null; done
for c in eu0 eu1 us0 us1; do "$BIN" certs issue --dir certs --role node --name "region-$c" >/dev/null; done
for r in eu us; do "$BIN" certs issue --dir certs --role node --name "gw-$r" >/dev/null; done
"$BIN" certs issue --dir certs --role admin --name ops >/dev/null
mock="127.0.0.1:$((BASE + 400))"

common() { # the parts every level shares: tiers, models, TLS
  cat <<YAML
tls: {dir: certs}
tiers:
  - name: pro
    templates:
      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 1200, period: 1m, burst: 60}
      - {name: spend, scope: [team], unit: micro_dollars, kind: quota, allowance: 20000000, window: month, reach: global}
models:
  - {name: mini, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
YAML
}
cluster() { # seeds...
  printf 'cluster:\n  seeds: [%s]\n  protocol_period: 500ms\n  ping_timeout: 200ms\n  suspicion_timeout: 2s\n  join_timeout: 2s\n' "$(IFS=,; echo "$*" | sed 's/,/, /g')"
}
{ cluster "127.0.0.1:$(port g0)" "127.0.0.1:$(port g1)"; echo "ledger: sqlite:ledger.db"; echo "lease: {ttl: 20s, refresh_interval: 2s}"; common; } > global.yaml
for r in eu us; do
  {
    cluster "127.0.0.1:$(port ${r}0)" "127.0.0.1:$(port ${r}1)"
    echo "upstream: {coordinators: [127.0.0.1:$(port g0), 127.0.0.1:$(port g1)], refresh_interval: 2s}"
    echo "lease: {ttl: 10s, refresh_interval: 1s}"
    common
    echo "gateway: {upstream: http://$mock, coordinator: '127.0.0.1:$(port ${r}0),127.0.0.1:$(port ${r}1)', consumers: consumers.yaml, audit_dir: audit-$r}"
  } > "$r.yaml"
done
{
  echo "consumers:"
  echo "  - {id: carol, team: research, tenant: local, tier: pro, key_sha256: $("$BIN" hash-key sk-local-carol)}"
  echo "  - {id: dan, team: research, tenant: local, tier: pro, key_sha256: $("$BIN" hash-key sk-local-dan)}"
} > consumers.yaml

launch mock mock-upstream --listen "$mock" --latency-ms 20
for c in g0 g1; do launch "$c" coordinator --config global.yaml --name "$c" --listen "127.0.0.1:$(port $c)" --admin "127.0.0.1:$(admin $c)"; done
for c in eu0 eu1 us0 us1; do
  extra=()
  [[ $c == us* ]] && extra=(--upstream-latency-ms "$LAT" --upstream-jitter-ms 20 --upstream-faults)
  launch "$c" coordinator --config "${c:0:2}.yaml" --name "$c" --upstream-name "region-$c" \
    --listen "127.0.0.1:$(port $c)" --admin "127.0.0.1:$(admin $c)" "${extra[@]}"
done
gwport() { [ "$1" = eu ] && echo $((BASE + 200)) || echo $((BASE + 201)); }
for r in eu us; do
  launch "gw-$r" gateway --config "$r.yaml" --name "gw-$r" --listen "127.0.0.1:$(gwport $r)" --admin "127.0.0.1:$(($(gwport $r) + 100))"
done

# Wait (bounded) until every coordinator and gateway reports ready.
wait_ready $(for c in "${names[@]}"; do admin "$c"; done) $(for r in eu us; do echo $(($(gwport $r) + 100)); done)

echo "Allot regions in $RUN (logs in logs/, PIDs in pids)"
for c in "${names[@]}"; do
  echo "  coordinator $c   mTLS 127.0.0.1:$(port $c)   admin http://127.0.0.1:$(admin $c)/metrics"
done
for r in eu us; do
  echo "  gateway gw-$r   http://127.0.0.1:$(gwport $r)/v1/chat/completions   admin http://127.0.0.1:$(($(gwport $r) + 100))/metrics"
done
echo "  region us is ${LAT} ± 20 ms each way from the global cluster (kill -USR1 the us coordinators to cut it, -USR2 to heal)"
echo "API keys: sk-local-carol, sk-local-dan (tier pro; team research's spend is one worldwide quota)"
echo "Try: curl -s http://127.0.0.1:$(gwport us)/v1/chat/completions -H 'Authorization: Bearer sk-local-carol' \\"
echo "       -d '{\"model\":\"mini\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
echo "     $BIN status --coordinator 127.0.0.1:$(port g0) --tls-dir $RUN/certs   # the global view: regions appear as nodes"
echo "Stop: ALLOT_LOCAL_DIR=$RUN cluster/local/down.sh"
