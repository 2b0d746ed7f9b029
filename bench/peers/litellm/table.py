"""Turns bench/peers/litellm/run.sh's raw lines (litellm.txt) into its Markdown tables.
Usage: table.py litellm.txt BUDGET_TOKENS BUDGET_REQUESTS"""
import json
import sys


def ms(text):
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


wrk, budget, counters = {}, {}, []
for line in open(sys.argv[1]):
    name, rest = line.split(" ", 1)
    if name == "redis":
        key, value = rest.split()
        deployment, kind, minute = key.split(":")[-3:]
        which = "router success counter" if key.startswith("global_router:") else "limiter"
        counters.append(f"{deployment} {kind} ({which}) in {minute.replace('-', ':')} UTC = {int(value):,}")
    elif rest.startswith("budget-"):
        unit, result = rest[len("budget-"):].split(" ", 1)
        budget[(name, unit)] = json.loads(result)
    else:
        f = rest.split()
        c = int(f[0][2:])
        wrk[(name, c)] = {"p50": ms(f[2]), "p99": ms(f[4]), "rps": float(f[6]), "non2xx": int(f[8])}
T = int(sys.argv[2])
names = [("allot", "Allot gateway"), ("litellm", "LiteLLM proxy 1.80.0 (Redis)")]
print("| | p50 at 1 conn | added to direct | p99 at 1 conn | req/s at 32 conn | × direct | non-2xx |")
print("|---|---|---|---|---|---|---|")
d1, d32 = wrk[("direct", 1)], wrk[("direct", 32)]
print(f"| mock upstream directly | {d1['p50']:.2f} ms | — | {d1['p99']:.2f} ms | {d32['rps']:,.0f} | 1.00× | {d1['non2xx'] + d32['non2xx']} |")
for key, label in names:
    a, b = wrk[(key, 1)], wrk[(key, 32)]
    print(f"| {label} | {a['p50']:.2f} ms | +{a['p50'] - d1['p50']:.2f} ms | {a['p99']:.2f} ms | {b['rps']:,.0f} "
          f"| {b['rps'] / d32['rps']:.2f}× | {a['non2xx'] + b['non2xx']} |")
R = int(sys.argv[3])
print()
print(f"Budgets shared by two instances of each: {T:,} tokens (tokens summed from the upstream's usage in the answers), "
      f"then {R:,} requests:")
print()
print("| budget | | admitted | overshoot | used of the budget | answered 200 | refused 429 | other (no answer in 10 s, …) |")
print("|---|---|---|---|---|---|---|---|")
for unit, cap in (("tokens", T), ("requests", R)):
    for key, label in names:
        r = budget[(key, unit)]
        ok, refused = r["status"].get("200", 0), r["status"].get("429", 0)
        other = ", ".join(f"{v:,} {k}" for k, v in sorted(r["status"].items()) if k not in ("200", "429")) or "0"
        admitted = r["tokens"] if unit == "tokens" else ok
        print(f"| {cap:,} {unit} | {label} | {admitted:,} | {max(0, admitted - cap):,} | {admitted / cap:.3f} "
              f"| {ok:,} | {refused:,} | {other} |")
if counters:
    print()
    print("LiteLLM's counters in Redis after the runs: " + "; ".join(sorted(counters)) + ".")
