#!/usr/bin/env python3
"""bench/report/report.py OUT — turns what bench/run.sh collected in OUT into results.md,
CSV files and SVG plots. Reads sim/sim-N.jsonl (allot simulate --json, one scenario per line)
and real/*.json (bench/real, one run per strategy and trace), whichever exist."""
import csv, glob, json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svg  # noqa: E402

out = sys.argv[1]
md = []


def write(name, text):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


for first in ("machine.md", "headline.md"):
    if os.path.exists(os.path.join(out, first)):
        md.append(open(os.path.join(out, first)).read().strip())

# 1. The simulator: every scenario × every strategy at each node count.
sims = {}
for path in sorted(glob.glob(os.path.join(out, "sim", "sim-*.jsonl"))):
    n = int(os.path.basename(path)[4:-6])
    sims[n] = [json.loads(l) for l in open(path) if l.strip()]
if sims:
    fields = ["nodes", "scenario", "strategy", "overshoot", "overshoot_one_period", "utilization", "fairness",
              "messages_per_1k", "false_deny_rate", "decision_wait_p99_ms", "conformant", "admitted", "requests"]
    with open(os.path.join(out, "simulator.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for n in sorted(sims):
            for rep in sims[n]:
                for s in rep["strategies"]:
                    w.writerow([n, rep["scenario"], s["name"]] + [s.get(k) for k in fields[3:]])
    md.append("## 1. Accuracy in virtual time (the simulator)\n\nSame demand trace for every strategy; "
              "`exact` = admissions never broke the budget's definition over any interval. CSV: `simulator.csv`.")
    for n in sorted(sims):
        rows = []
        for rep in sims[n]:
            for s in rep["strategies"]:
                rows.append([rep["scenario"], s["name"], f'{s["overshoot"]:.3f}', f'{s["utilization"]:.3f}', f'{s["fairness"]:.3f}',
                             f'{s["messages_per_1k"]:.1f}', f'{s["false_deny_rate"]:.4f}', f'{s["decision_wait_p99_ms"]:.1f}',
                             "yes" if s["conformant"] else "**no**"])
        md.append(f"### {n} nodes\n\n" + table(["scenario", "strategy", "overshoot", "utilization", "fairness", "msgs/1k",
                                                  "false-deny", "wait p99 ms", "exact"], rows))
    # Plots at 16 nodes (or the closest count run).
    n = min(sims, key=lambda k: abs(k - 16))
    reps = {r["scenario"]: r for r in sims[n]}
    for scen in ("shift", "burst"):
        r = reps.get(scen)
        if not r:
            continue
        series = {s["name"]: list(enumerate(s["admitted_per_second"])) for s in r["strategies"]}
        cap = (r["cap_per_second"], "cap per second") if r.get("cap_per_second") else None
        write(f"sim-admitted-{scen}.svg", svg.line_chart(f"{scen}: admitted per second, {n} nodes (simulator)", "seconds",
                                                         "requests admitted per second", series, cap))
    names = sorted({s["name"] for r in sims[n] for s in r["strategies"]}, key=lambda x: (x != "allot", x))
    groups = [r["scenario"] for r in sims[n]]
    def grid(key):
        return [[next((s[key] for s in r["strategies"] if s["name"] == nm), None) for nm in names] for r in sims[n]]
    write("sim-overshoot.svg", svg.bar_chart(f"Overshoot over the cap, {n} nodes (simulator; 0 is exact)", "overshoot (fraction of the cap)",
                                             groups, names, grid("overshoot")))
    write("sim-utilization.svg", svg.bar_chart(f"Utilization, {n} nodes (simulator; 1 = an exact zero-latency limiter)", "utilization",
                                               groups, names, grid("utilization")))
    md.append(f"Plots ({n} nodes): `sim-admitted-shift.svg`, `sim-admitted-burst.svg`, `sim-overshoot.svg`, `sim-utilization.svg`.")

# 2. Real processes (bench/real): one JSON per strategy and trace.
reals = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "real", "*.json")))]
if reals:
    fields = ["trace", "strategy", "cap_per_second", "offered", "admitted", "overshoot", "excess_units", "utilization",
              "p50_us", "p99_us", "p999_us", "requests_per_second", "calls_per_1k"]
    with open(os.path.join(out, "real.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in reals:
            w.writerow([r.get(k) for k in fields])
    rows = [[r["trace"], r["strategy"], r["admitted"], f'{r["overshoot"]:.3f}', r["excess_units"], f'{r["utilization"]:.3f}',
             f'{r["p50_us"]:.1f}', f'{r["p99_us"]:.1f}', f'{r["p999_us"]:.1f}', f'{r["requests_per_second"]:.0f}',
             f'{r["calls_per_1k"]:.1f}'] for r in reals]
    md.append("## 2. Accuracy and latency on real processes\n\nCSV: `real.csv`.\n\n" +
              table(["trace", "strategy", "admitted", "overshoot", "excess", "utilization", "p50 µs", "p99 µs", "p99.9 µs",
                     "req/s", "calls/1k"], rows))
    traces = sorted({r["trace"] for r in reals})
    strategies = sorted({r["strategy"] for r in reals}, key=lambda x: (x != "allot", x))
    for t in traces:
        series = {r["strategy"]: list(enumerate(r["admitted_per_second"])) for r in reals if r["trace"] == t}
        cap = next((r["cap_per_second"] for r in reals if r["trace"] == t), None)
        write(f"real-admitted-{t}.svg", svg.line_chart(f"{t}: fleet-wide admitted per second (real processes)", "seconds",
                                                       "tokens admitted per second" if t.startswith("tokens") else "requests admitted per second", series, (cap, "cap") if cap else None))
    lat = [[next((r[k] for r in reals if r["strategy"] == s and r["trace"] == traces[0]), None) for s in strategies]
           for k in ("p50_us", "p99_us", "p999_us")]
    write("real-latency.svg", svg.bar_chart(f"Decision latency ({traces[0]} trace, real processes)", "microseconds",
                                            ["p50", "p99", "p99.9"], strategies, lat, log=True, unit=" µs"))
    md.append("Plots: " + ", ".join(f"`real-admitted-{t}.svg`" for t in traces) + ", `real-latency.svg`.")

# 3. Scaling (allot-bench scale): one JSON line per measurement.
scaling_path = os.path.join(out, "scaling.jsonl")
if os.path.exists(scaling_path):
    rows = [json.loads(l) for l in open(scaling_path) if l.strip()]
    with open(os.path.join(out, "scaling.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "count", "grants_per_second", "rss_mb", "bytes_per_budget", "setup_seconds", "tick_ms"])
        for r in rows:
            w.writerow([r["kind"], r["count"], round(r["grants_per_second"]), round(r["rss_mb"], 1),
                        round(r.get("bytes_per_budget", 0)), round(r.get("setup_seconds", 0), 2), round(r.get("tick_ms", 0), 2)])
    md.append("## 3. Scaling one coordinator\n\nBudgets: acquires spread over all of them, in process (no network). "
              "Connections: nodes over mutual TLS on loopback, 2,000 budgets. CSV: `scaling.csv`.\n\n" +
              table(["what", "count", "grants/s", "memory (MB)", "bytes per budget", "one tick (ms)"],
                    [[r["kind"], f'{r["count"]:,}', f'{r["grants_per_second"]:,.0f}', f'{r["rss_mb"]:.1f}',
                      f'{r["bytes_per_budget"]:,.0f}' if r["kind"] == "budgets" else "-",
                      f'{r["tick_ms"]:.2f}' if r["kind"] == "budgets" else "-"] for r in rows]))
    for kind in ("budgets", "connections"):
        sel = [r for r in rows if r["kind"] == kind]
        if sel:
            write(f"scaling-{kind}.svg", svg.bar_chart(f"Grants per second against {kind} (one coordinator)", "grants per second",
                                                       [f'{r["count"]:,}' for r in sel], ["grants/s"],
                                                       [[r["grants_per_second"]] for r in sel]))
    md.append("Plots: `scaling-budgets.svg`, `scaling-connections.svg`.")

for extra in ("gateway.md", "micro.md", "litellm.md"):
    p = os.path.join(out, extra)
    if os.path.exists(p):
        md.append(open(p).read().strip())

write("results.md", "# Allot benchmark results\n\n" + "\n\n".join(md) + "\n")
print(f"wrote {out}/results.md")
