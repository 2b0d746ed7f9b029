"""Drives an Allot gateway with the official OpenAI and Anthropic Python SDKs.

Run by Tests/AllotGatewayTests/SDKTests.swift with the gateway's address; the upstream behind
the gateway replays recorded-shape answers (Tests/AllotGatewayTests/Fixtures), picked by the
`x-fixture` header. Prints one JSON line per call: the usage as the SDK parsed it, so the
test can compare it with what the gateway charged.
"""
import json
import sys

import anthropic
import openai

base = sys.argv[1]
oa = openai.OpenAI(base_url=base + "/v1", api_key="sk-pro-1", max_retries=0)
an = anthropic.Anthropic(base_url=base, api_key="sk-pro-1", max_retries=0)
messages = [{"role": "user", "content": "Say hello to the fleet."}]
system = "You are a careful assistant for a fleet of gateways. " * 30


def out(name, input_tokens, output_tokens):
    print(json.dumps({"call": name, "input": input_tokens, "output": output_tokens}), flush=True)


def fx(name):
    return {"x-fixture": name}


r = oa.chat.completions.create(model="large", messages=messages, max_tokens=100, n=4, extra_headers=fx("chat_n4.json"))
assert len(r.choices) == 4
out("chat n=4", r.usage.prompt_tokens, r.usage.completion_tokens)

usage = None
stream = oa.chat.completions.create(
    model="large", messages=messages, max_tokens=100, stream=True, stream_options={"include_usage": True},
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
    extra_headers=fx("chat_tools_stream.sse"))
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
out("chat stream tools", usage.prompt_tokens, usage.completion_tokens)

r = oa.responses.create(model="large", instructions=system, input="What do we share?", max_output_tokens=600,
                        extra_headers=fx("responses.json"))
out("responses", r.usage.input_tokens, r.usage.output_tokens)

done = None
for event in oa.responses.create(model="large", input="Say hello to the fleet.", max_output_tokens=100, stream=True,
                                 extra_headers=fx("responses_stream.sse")):
    if event.type == "response.completed":
        done = event.response
out("responses stream", done.usage.input_tokens, done.usage.output_tokens)

e = oa.embeddings.create(model="small", input="Say hello to the fleet.", extra_headers=fx("embeddings.json"))
out("embeddings", e.usage.prompt_tokens, 0)

ids = [m.id for m in oa.models.list(extra_headers=fx("models.json"))]
assert ids == ["small", "large"], ids

m = an.messages.create(model="large", system=system, max_tokens=100, messages=messages, extra_headers=fx("messages.json"))
u = m.usage
out("messages", u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0), u.output_tokens)

with an.messages.stream(model="large", system=system, max_tokens=100, messages=messages,
                        extra_headers=fx("messages_stream.sse")) as s:
    final = s.get_final_message()
u = final.usage
out("messages stream", u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0), u.output_tokens)

# A refusal reaches each SDK as its own typed error.
try:
    oa.chat.completions.create(model="nope", messages=messages)
    raise SystemExit("an unknown model was accepted")
except openai.NotFoundError as err:
    out("openai error " + str(err.status_code), 0, 0)
try:
    an.messages.create(model="large", max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "video", "source": {"type": "url", "url": "https://example.com/v.mp4"}}]}])
    raise SystemExit("an unbounded part was accepted")
except anthropic.BadRequestError as err:
    assert err.body["error"]["type"] == "invalid_request_error", err.body
    out("anthropic error " + str(err.status_code), 0, 0)
