#!/usr/bin/env bash
# cluster/nginx/nginx-test.sh — Debian's nginx with its njs module in front of the mock LLM,
# its budgets kept by an Allot gateway's sidecar API (one coordinator, one gateway, all
# processes on loopback); requests go through nginx and the caps are checked:
#   - auth_request (GET /v1/models): 5 requests per minute → 5 served, then 429 with Retry-After;
#     an unknown key → 401
#   - njs (POST /v1/chat/completions): tokens settled to the usage the upstream reported
#     (gateway metrics = the answers' usage); a tokens/hour cap refuses the request past it;
#     a concurrency limit of 1 refuses a second request in flight and frees the permit when
#     the first is settled; an answer over 4 KiB comes through whole; a stream is refused
# Run by scripts/test.sh (CI). Installs nginx-light and libnginx-mod-http-js if missing.
# Environment: ALLOT_BIN (default: a debug build of this checkout), ALLOT_NGINX_BASE_PORT (18600).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$ROOT/cluster/nginx
BASE=${ALLOT_NGINX_BASE_PORT:-18600}
if ! command -v nginx > /dev/null || [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-http-js) > /dev/null
fi
command -v curl > /dev/null || { apt-get update -qq && apt-get install -y -qq curl > /dev/null; }
BIN=${ALLOT_BIN:-}
if [ -z "$BIN" ]; then (cd "$ROOT" && swift build --product allot 2>&1 | tail -1); BIN=$ROOT/.build/debug/allot; fi
RUN=$(mktemp -d /tmp/allot-nginx.XXXXXX)
chmod 755 "$RUN"
pids=()
cleanup() {
  [ -f "$RUN/nginx.pid" ] && kill "$(cat "$RUN/nginx.pid")" 2> /dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
}
trap cleanup EXIT
fail() { echo "nginx-test: FAILED: $*" >&2; echo "--- logs:" >&2; tail -n 20 "$RUN"/*.log >&2 || true; exit 1; }
cd "$RUN"
mkdir -p body proxy fastcgi uwsgi scgi

COORD=127.0.0.1:$BASE; CADMIN=$((BASE + 1)); GW=$((BASE + 2)); GADMIN=$((BASE + 3)); MOCK=127.0.0.1:$((BASE + 4)); NGINX=$((BASE + 5))
TOKEN=sidecar-$(date +%s%N)
"$BIN" certs init --dir certs > /dev/null
"$BIN" certs issue --dir certs --role coordinator --name c0 --ip 127.0.0.1 > /dev/null
"$BIN" certs issue --dir certs --role node --name gw-0 > /dev/null
cat > allot.yaml << YAML
tls: {dir: certs}
lease: {ttl: 10s, refresh_interval: 1s}
tiers:
  - name: web
    templates:
      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 5, period: 1m, burst: 5}
    entitlements: {routes: [models, chat], models: [mini]}
  - name: tok
    templates:
      - {name: tph, scope: [consumer], unit: tokens, kind: rate, limit: 2000, period: 1h, burst: 2000}
    entitlements: {routes: [chat], models: [mini]}
  - name: agent
    templates:
      - {name: inflight, scope: [consumer], kind: concurrency, limit: 1}
    entitlements: {routes: [chat], models: [mini]}
models:
  - {name: mini, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 4096}
gateway:
  upstream: http://$MOCK
  coordinator: $COORD
  consumers: consumers.yaml
  sidecar_tokens_sha256: [$("$BIN" hash-key "$TOKEN")]
YAML
{
  echo "consumers:"
  echo "  - {id: alice, tier: web, key_sha256: $("$BIN" hash-key sk-alice)}"
  echo "  - {id: bob, tier: tok, key_sha256: $("$BIN" hash-key sk-bob)}"
  echo "  - {id: eve, tier: agent, key_sha256: $("$BIN" hash-key sk-eve)}"
} > consumers.yaml
"$BIN" mock-upstream --listen "$MOCK" --completion-tokens 40 > mock.log 2>&1 & pids+=($!)
"$BIN" coordinator --config allot.yaml --name c0 --listen "$COORD" --admin "127.0.0.1:$CADMIN" > coordinator.log 2>&1 & pids+=($!)
"$BIN" gateway --config allot.yaml --name gw-0 --listen "127.0.0.1:$GW" --admin "127.0.0.1:$GADMIN" > gateway.log 2>&1 & pids+=($!)
for _ in $(seq 1 150); do
  curl -fs "http://127.0.0.1:$CADMIN/readyz" > /dev/null 2>&1 && curl -fs "http://127.0.0.1:$GADMIN/readyz" > /dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$GADMIN/readyz" > /dev/null || fail "the gateway is not ready"
sed -e "s|@RUN@|$RUN|g" -e "s|@DIR@|$DIR|g" -e "s|@SIDECAR@|127.0.0.1:$GADMIN|g" -e "s|@UPSTREAM@|$MOCK|g" \
    -e "s|@LISTEN@|127.0.0.1:$NGINX|g" -e "s|@TOKEN@|$TOKEN|g" "$DIR/nginx.conf.template" > nginx.conf
nginx -t -c "$RUN/nginx.conf" -p "$RUN" > nginx-check.log 2>&1 || fail "nginx -t: $(cat nginx-check.log)"
nginx -c "$RUN/nginx.conf" -p "$RUN"
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$NGINX/" && break; sleep 0.1; done
N=http://127.0.0.1:$NGINX

# 1. auth_request: 5 per minute, then 429 with Retry-After; an unknown key: 401.
codes=""
start=$(date +%s)
for i in $(seq 1 8); do
  codes+="$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-alice' "$N/v1/models") "
done
ok=$(echo "$codes" | tr ' ' '\n' | grep -c '^200$' || true)
elapsed=$(( $(date +%s) - start + 1 ))
bound=$(( 5 + (5 * elapsed + 59) / 60 ))
echo "nginx-test: auth_request GET /v1/models x8: $codes(served $ok, bound 5 + 5/min × ${elapsed}s = $bound)"
[ "$ok" -ge 5 ] && [ "$ok" -le "$bound" ] || fail "served $ok of 8 under 5 per minute"
echo "$codes" | grep -q 429 || fail "no 429 past the cap"
retry=$(curl -s -D - -o /dev/null -H 'Authorization: Bearer sk-alice' "$N/v1/models" | tr -d '\r' | awk -F': ' 'tolower($1)=="retry-after" {print $2}')
[ -n "$retry" ] || fail "a 429 without Retry-After"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-nobody' "$N/v1/models")" = 401 ] || fail "an unknown key was not 401"

# 2. njs: tokens settled to the upstream's usage; the tokens/hour cap refuses past it.
body='{"model":"mini","max_tokens":300,"messages":[{"role":"user","content":"hello through nginx"}]}'
reply=$(curl -s -H 'Authorization: Bearer sk-bob' -H 'Content-Type: application/json' -d "$body" "$N/v1/chat/completions")
used=$(echo "$reply" | python3 -c 'import json,sys; u=json.load(sys.stdin)["usage"]; print(u["prompt_tokens"] + u["completion_tokens"])') \
  || fail "no usage in the answer: $reply"
sleep 0.3
settled=$(curl -s "http://127.0.0.1:$GADMIN/metrics" | awk '/^allot_gateway_tokens_total\{.*consumer="bob"/ {s += $NF} END {print s + 0}')
echo "nginx-test: njs POST /v1/chat/completions: upstream usage $used tokens, gateway settled $settled"
[ "$settled" = "$used" ] || fail "settled $settled tokens, the upstream reported $used"
big='{"model":"mini","max_tokens":1940,"messages":[{"role":"user","content":"a long answer please"}]}'
c1=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-bob' -d "$big" "$N/v1/chat/completions")
echo "nginx-test: a bound past what 2,000 tokens/hour leaves (after $used used): $c1"
[ "$c1" = 429 ] || fail "a request past the tokens cap got $c1"

# 3. njs: a concurrency limit of 1; the permit comes back when the first request is settled.
curl -s -o "$RUN/slow.json" -w '%{http_code}' -H 'Authorization: Bearer sk-eve' -H 'x-mock-latency-ms: 1500' -d "$body" "$N/v1/chat/completions" > "$RUN/slow.code" &
slow=$!
sleep 0.7
second=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-eve' -d "$body" "$N/v1/chat/completions")
wait $slow
after=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-eve' -d "$body" "$N/v1/chat/completions")
echo "nginx-test: concurrency 1: in flight $(cat "$RUN/slow.code"), a second meanwhile $second, after it ended $after"
[ "$(cat "$RUN/slow.code")" = 200 ] && [ "$second" = 429 ] && [ "$after" = 200 ] || fail "the concurrency limit did not hold or its permit did not come back"
# 4. An answer larger than nginx's default subrequest buffer (4 KiB) comes through whole and is settled.
large='{"model":"mini","max_tokens":3000,"messages":[{"role":"user","content":"a long one"}]}'
size=$(curl -s -o "$RUN/large.json" -w '%{http_code} %{size_download}' -H 'Authorization: Bearer sk-eve' -H 'x-mock-completion-tokens: 3000' -d "$large" "$N/v1/chat/completions")
echo "nginx-test: a large answer: $size (bytes)"
[ "${size%% *}" = 200 ] && [ "${size##* }" -gt 4096 ] || fail "a large answer: $size"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))["usage"]' "$RUN/large.json" || fail "the large answer is not whole JSON"
# 5. A streaming request is refused on this path (its usage would not be read).
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-eve' -d '{"model":"mini","stream":true,"messages":[]}' "$N/v1/chat/completions")" = 400 ] \
  || fail "a streaming request was not refused"
echo "nginx-test: passed"
