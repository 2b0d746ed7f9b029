"""Closed-loop load for the LiteLLM comparison: WORKERS concurrent clients per target URL,
for SECONDS seconds, one chat completion each time. Prints one JSON object: per status counts,
the tokens of the answers that succeeded (usage.total_tokens, as the upstream reported them)
and latency percentiles. Bounded: every request has a 10 s timeout and the run stops at its
deadline.

    python load.py --url http://127.0.0.1:18080 --url http://127.0.0.1:18081 \
        --key sk-tight --model tight --workers 16 --seconds 20
"""
import argparse
import asyncio
import json
import time

import httpx


async def worker(client, url, body, headers, deadline, out):
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            r = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
            status = r.status_code
            tokens = r.json().get("usage", {}).get("total_tokens", 0) if status == 200 else 0
        except httpx.TimeoutException:
            status, tokens = "timeout", 0  # no answer within 10 s
        except (httpx.HTTPError, ValueError) as e:
            status, tokens = type(e).__name__, 0
        out["status"][str(status)] = out["status"].get(str(status), 0) + 1
        out["tokens"] += tokens
        if status == 200:
            out["latencies"].append(time.monotonic() - start)
        elif status == 429:
            await asyncio.sleep(0.01)  # a refused client backs off briefly, as SDKs do


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", action="append", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--max-tokens", type=int, default=64)
    a = p.parse_args()
    body = {"model": a.model, "max_tokens": a.max_tokens,
            "messages": [{"role": "user", "content": "Say hello to the fleet."}]}
    headers = {"Authorization": "Bearer " + a.key}
    out = {"status": {}, "tokens": 0, "latencies": []}
    limits = httpx.Limits(max_connections=a.workers * len(a.url))
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        deadline = time.monotonic() + a.seconds
        await asyncio.gather(*(worker(client, u, body, headers, deadline, out)
                               for u in a.url for _ in range(a.workers)))
    lat = sorted(out.pop("latencies"))
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None
    out["p50_ms"], out["p99_ms"] = pct(0.5), pct(0.99)
    print(json.dumps(out))


asyncio.run(main())
