#!/usr/bin/env bash
# cluster/netns/partition-test.sh [COORDINATORS SEEDS NAMESPACE...] — bounded (~45 s): C
# coordinators (default 3) and two nodes, each in its own network namespace, a fault proxy
# (2±1 ms) in front of every coordinator, one SQLite ledger; the first SEEDS coordinators are
# the seeds (default all), every one is listed in cluster.members. The listed namespaces
# (default allot-c2 allot-n1: a minority with one node) are cut off for 7 s: the minority's
# node spends what it holds and then follows the fail mode (closed); the majority takes over
# the minority's budgets. After healing the views reconverge, the minority node is served
# again, and no capacity was lost or duplicated (quotas exact against the ledger, rate buckets
# never exceeded): no budget was granted on both sides. Step 4's test is the default; issue
# 15's is `5 2 allot-c0 allot-c1 allot-n1` (both seeds on the minority side: with a quorum
# of the seeds, 1, that side would go on granting). Exits non-zero on any failure. Needs root.
source "$(dirname "$0")/lib.sh"
need_root
C=${1:-3}; S=${2:-$C}
CUT=("${@:3}")
[ ${#CUT[@]} -gt 0 ] || CUT=(allot-c2 allot-n1)
[ -x "$BIN" ] || (cd "$REPO" && swift build --product allot >/dev/null)
cleanup() { "$NETNS_ROOT/teardown.sh" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$NETNS_ROOT/setup.sh" "$C" 2 >/dev/null
cd "$RUN"
rm -rf certs ledger.db* trace-*.txt report-*.json
"$BIN" certs init --dir certs --trust-domain allot.netns >/dev/null
for ((i = 0; i < C; i++)); do "$BIN" certs issue --dir certs --role coordinator --name "c$i" --ip "$(coord_ip $i)" >/dev/null; done
for j in 0 1; do "$BIN" certs issue --dir certs --role node --name "n$j" >/dev/null; done
members=""; seeds=""
for ((i = 0; i < C; i++)); do members+="${members:+, }$(coord_ip $i):7000"; done
for ((i = 0; i < S; i++)); do seeds+="${seeds:+, }$(coord_ip $i):7000"; done
{
  echo "cluster: {seeds: [$seeds], members: [$members], protocol_period: 200ms, ping_timeout: 80ms, suspicion_timeout: 1s, join_timeout: 1s}"
  echo "ledger: sqlite:$RUN/ledger.db"
  echo "tls: {dir: $RUN/certs}"
  echo "lease: {ttl: 2s, refresh_interval: 200ms}"
  echo "budgets:"
  for ((i = 0; i < C; i++)); do echo "  - {id: q$i, unit: requests, kind: quota, allowance: 1200, window: month}"; done
  for ((i = 0; i < C; i++)); do echo "  - {id: r$i, unit: requests, kind: rate, limit: 60, period: 1s, burst: 60}"; done
} > allot.yaml
for ((i = 0; i < C; i++)); do
  launch "allot-c$i" "proxy-c$i" "$BIN" fault-proxy --listen "$(coord_ip $i):7000" --upstream 127.0.0.1:7001 --latency-ms 2 --jitter-ms 1
  launch "allot-c$i" "c$i" "$BIN" coordinator --config allot.yaml --name "c$i" --listen 127.0.0.1:7001 --admin 127.0.0.1:7100 \
    --advertise "$(coord_ip $i):7000"
done
for _ in $(seq 1 100); do
  ok=1; for ((i = 0; i < C; i++)); do in_ns "allot-c$i" curl -fs 127.0.0.1:7100/readyz >/dev/null 2>&1 || ok=0; done
  [ $ok = 1 ] && break; sleep 0.2
done
[ $ok = 1 ] || { echo "FAIL: the cluster did not form"; tail -5 logs/c*.log; exit 1; }
sleep 2 # the formation's learning time (one lease TTL)
t0=$(date +%s.%N)
for j in 0 1; do
  launch "allot-n$j" "n$j" sh -c "exec '$BIN' node-load --config allot.yaml --coordinator '$(echo "$members" | tr -d ' ')' \
    --tls-dir certs --name n$j --rate 300 --seconds 20 --each --trace trace-n$j.txt ${ALLOT_NODE_LOG:+--log-level $ALLOT_NODE_LOG} > report-n$j.json"
done
sleep 5
tp=$(date +%s.%N); "$NETNS_ROOT/partition.sh" "${CUT[@]}" >/dev/null; echo "partitioned ${CUT[*]} at +$(awk "BEGIN{printf \"%.1f\", $tp - $t0}") s"
sleep 7
th=$(date +%s.%N); "$NETNS_ROOT/heal.sh" >/dev/null; echo "healed at +$(awk "BEGIN{printf \"%.1f\", $th - $t0}") s"
# Views reconverge (bounded).
for _ in $(seq 1 75); do
  conv=1; for ((i = 0; i < C; i++)); do
    m=$(in_ns "allot-c$i" curl -fs 127.0.0.1:7100/metrics 2>/dev/null | awk '/^allot_cluster_members /{print int($2)}')
    [ "${m:-0}" = "$C" ] || conv=0
  done
  [ $conv = 1 ] && break; sleep 0.2
done
tc=$(date +%s.%N)
[ $conv = 1 ] && echo "views reconverged +$(awk "BEGIN{printf \"%.1f\", $tc - $th}") s after healing" || echo "views did not reconverge"
# Wait for the nodes to finish (bounded by their --seconds), then check everything.
for _ in $(seq 1 100); do [ -s report-n0.json ] && [ -s report-n1.json ] && break; sleep 0.3; done
for ((i = 0; i < C; i++)); do kill -TERM "$(awk -v n="c$i" '$2==n{print $1}' pids)" 2>/dev/null || true; done
sleep 1
python3 - "$tp" "$th" "$conv" "$C" <<'PY'
import json, sqlite3, sys, time, calendar, datetime
tp, th, conv, C = float(sys.argv[1]) * 1e9, float(sys.argv[2]) * 1e9, sys.argv[3] == "1", int(sys.argv[4])
fail = []
times = {}
per_node = {}
for n in ("n0", "n1"):
    for line in open(f"trace-{n}.txt").read().split("\n"):
        if not line.strip(): continue
        b, t = line.split(); t = int(t)
        times.setdefault(b, []).append(t); per_node.setdefault(n, []).append(t)
db = sqlite3.connect("ledger.db")
for q in [f"q{i}" for i in range(C)]:
    admitted = len(times.get(q, []))
    row = db.execute("SELECT granted - released, expired, granted - released - consumed - expired FROM quota_usage WHERE budget = ?", (q,)).fetchone()
    committed, expired, unreported = row if row else (0, 0, 0)
    lost = committed - admitted
    print(f"{q}: admitted {admitted} of 1200, ledger committed {committed} ({expired} on leases that lapsed unreported, {unreported} unreported)")
    if admitted > 1200: fail.append(f"{q} over its allowance: {admitted}")
    if committed > 1200: fail.append(f"{q}: ledger over the allowance: {committed}")
    if admitted > committed: fail.append(f"{q}: {admitted} admitted but only {committed} recorded")
    # Units are lost on leases that lapse without a report (a node cut off from the owner, a
    # budget taken over in learning mode): at most about what the two nodes hold of one budget
    # when the cut comes (each asks for ~50 requests/s over leases of 2 s). 60 failed 1 run of
    # ~10 in CI with 70; 150 leaves room under a loaded machine and still catches a lost lease
    # per refresh (hundreds).
    if lost > 150: fail.append(f"{q}: {lost} units lost (counted spent but never used)")
for r in [f"r{i}" for i in range(C)]:
    ts = sorted(times.get(r, []))
    level, last, worst = 60.0, ts[0] if ts else 0, 0.0
    for t in ts:
        level = min(60.0, level + (t - last) * 60 / 1e9); last = t; level -= 1
        worst = max(worst, -level)
    print(f"{r}: admitted {len(ts)}, worst excess over the bucket {worst:.2f}")
    if worst > 0.6: fail.append(f"{r}: {worst:.2f} over the bucket (1% is 0.6)")
n1 = per_node.get("n1", [])
during = [t for t in n1 if tp <= t < th]
dark = [t for t in n1 if tp + 3e9 <= t < th]
after = [t for t in n1 if t >= th]
print(f"minority node n1: {len(during)} admitted during the partition (all within {((max(during) - tp) / 1e9 if during else 0):.2f} s of it), {len(after)} after healing")
if dark: fail.append(f"n1 admitted {len(dark)} requests more than 3 s into the partition (fail mode closed)")
if not after: fail.append("n1 was not served again after healing")
if not conv: fail.append("views did not reconverge")
for f in fail: print("FAIL:", f)
print("partition test:", "FAILED" if fail else "passed")
sys.exit(1 if fail else 0)
PY
