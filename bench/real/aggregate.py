#!/usr/bin/env python3
"""bench/real/aggregate.py RAW_DIR LIMIT BURST TRACE STRATEGY OUT_JSON — merges the attempt
files (`ns cost admitted decision_ns`) and JSON summaries that `allot-bench node` wrote for one
run into one result: fleet-wide admitted per second, overshoot against the token bucket
(LIMIT units per second, BURST units) over sliding windows of 0.1 s to the whole run, utilization against an
exact zero-latency token bucket fed the same attempts, pooled decision latency percentiles, and
messages or Redis calls per 1,000 admitted requests."""
import glob, json, os, sys

raw, limit, burst, trace, strategy, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
events = []
for p in glob.glob(os.path.join(raw, "attempts-*.txt")):
    for line in open(p):
        f = line.split()
        if len(f) == 4:
            events.append((int(f[0]), int(f[1]), f[2] == "1", int(f[3])))
summaries = [json.loads(l) for p in glob.glob(os.path.join(raw, "node-*.json")) for l in open(p) if l.startswith("{")]
if not events:
    sys.exit(f"no attempts in {raw}")
events.sort()
t0 = events[0][0]
adm = [(t, c) for t, c, ok, _ in events if ok]
admitted_units = sum(c for _, c in adm)

# Overshoot: the most admitted in any window of T seconds over what the bucket allows (B + L·T),
# from 0.1 s to the whole run (a limiter may keep short windows and still drift over a long one).
overshoot, excess = 0.0, 0.0
run_s = (events[-1][0] - t0) / 1e9
for T in [0.1, 0.5, 1.0, 2.0, 5.0, 10.0] + ([run_s] if run_s > 10 else []):
    span, allowed = int(T * 1e9), burst + limit * T
    j, s = 0, 0
    for i in range(len(adm)):
        while j < len(adm) and adm[j][0] < adm[i][0] + span:
            s += adm[j][1]
            j += 1
        overshoot = max(overshoot, (s - allowed) / allowed)
        excess = max(excess, s - allowed)
        s -= adm[i][1]

# Utilization: against an exact token bucket (full at the start) deciding the same attempts.
tokens, last, ideal = burst, t0, 0
for t, c, _, _ in events:
    tokens = min(burst, tokens + (t - last) / 1e9 * limit)
    last = t
    if tokens >= c:
        tokens -= c
        ideal += c

# Whole seconds only: the last, cut short by the end of the run, would look like a drop.
seconds = max(1, int((events[-1][0] - t0) / 1e9))
per_second = [0] * seconds
for t, c in adm:
    k = (t - t0) // 1_000_000_000
    if k < seconds:
        per_second[k] += c
lat = sorted(d for _, _, _, d in events)
pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] / 1000
calls = sum(s.get("calls", 0) for s in summaries)
duration = max((s.get("seconds", 0) for s in summaries), default=seconds)
result = {
    "trace": trace, "strategy": strategy, "cap_per_second": limit, "burst": burst, "nodes": len(summaries),
    "offered": len(events), "offered_units": sum(c for _, c, _, _ in events), "admitted": len(adm), "admitted_units": admitted_units,
    "overshoot": round(max(0.0, overshoot), 4), "excess_units": round(max(0.0, excess), 1),
    "utilization": round(admitted_units / ideal, 4) if ideal else 1.0,
    "p50_us": pct(0.5), "p99_us": pct(0.99), "p999_us": pct(0.999),
    "requests_per_second": len(events) / duration if duration else 0,
    "calls_per_1k": calls * 1000 / max(1, len(adm)), "admitted_per_second": per_second,
}
json.dump(result, open(out, "w"))
print(f"{trace:8} {strategy:14} admitted {len(adm):6} overshoot {result['overshoot']:.3f} utilization {result['utilization']:.3f} "
      f"p50 {result['p50_us']:.1f} µs p99 {result['p99_us']:.1f} µs calls/1k {result['calls_per_1k']:.1f}")
