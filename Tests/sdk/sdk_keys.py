"""Keys made at run time (`allot keys create`), tried with the official OpenAI and Anthropic
Python SDKs: the SDKs decide whether a served answer parses and whether a revoked key's
refusal is the authentication error they know.

Usage: sdk_keys.py BASE_URL LIVE_KEY REVOKED_KEY. Prints one JSON line per call.
"""
import json
import sys

import anthropic
import openai

base, live, revoked = sys.argv[1], sys.argv[2], sys.argv[3]
messages = [{"role": "user", "content": "Say hello to the fleet."}]
system = "You are a careful assistant for a fleet of gateways. " * 30


def out(**fields):
    print(json.dumps(fields), flush=True)


r = openai.OpenAI(base_url=base + "/v1", api_key=live, max_retries=0).chat.completions.create(
    model="large", messages=messages, max_tokens=100, n=4, extra_headers={"x-fixture": "chat_n4.json"})
out(call="openai live", usage=r.usage.total_tokens)

m = anthropic.Anthropic(base_url=base, api_key=live, max_retries=0).messages.create(
    model="large", system=system, max_tokens=100, messages=messages, extra_headers={"x-fixture": "messages.json"})
out(call="anthropic live", usage=m.usage.output_tokens)

try:
    openai.OpenAI(base_url=base + "/v1", api_key=revoked, max_retries=0).chat.completions.create(
        model="large", messages=messages, max_tokens=100)
    out(call="openai revoked", error=None)
except openai.AuthenticationError as e:
    out(call="openai revoked", error="AuthenticationError", status=e.status_code, code=e.code)

try:
    anthropic.Anthropic(base_url=base, api_key=revoked, max_retries=0).messages.create(
        model="large", messages=messages, max_tokens=100)
    out(call="anthropic revoked", error=None)
except anthropic.AuthenticationError as e:
    out(call="anthropic revoked", error="AuthenticationError", status=e.status_code)
