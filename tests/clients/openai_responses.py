# Drives the gateway's /v1/responses with the official `openai` Python SDK: a plain
# response, a stream, a function-call round trip (whole and streamed) and the SDK's errors.
# Run: python3 openai_responses.py BASE_URL API_KEY EXHAUSTED_KEY MODEL
import json
import sys

import openai
from openai import OpenAI

base, key, exhausted, model = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)

r = client.responses.create(model=model, instructions="Be terse.", input="hello responses")
assert r.object == "response" and r.status == "completed", r
assert "hello responses" in r.output_text, r.output_text
assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, r.usage

stream = client.responses.create(
    model=model, input=[{"role": "user", "content": "stream responses"}], stream=True
)
kinds, text, final = [], "", None
for event in stream:
    kinds.append(event.type)
    if event.type == "response.output_text.delta":
        text += event.delta
    if event.type == "response.completed":
        final = event.response
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
assert "stream responses" in text, text
assert final is not None and final.usage.output_tokens > 0, final
assert final.output_text == text, (final.output_text, text)

tools = [{
    "type": "function",
    "name": "exec_command",
    "description": "Run a shell command",
    "parameters": {
        "type": "object",
        "properties": {"cmd": {"type": "string"}},
        "required": ["cmd"],
    },
}]
history = [{"role": "user", "content": "list the files"}]
first = client.responses.create(model=model, input=history, tools=tools)
calls = [o for o in first.output if o.type == "function_call"]
assert len(calls) == 1 and calls[0].name == "exec_command", first.output
assert "cmd" in json.loads(calls[0].arguments), calls[0].arguments
history += [o.model_dump(exclude_none=True) for o in first.output]
history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "a.txt b.txt"})
second = client.responses.create(model=model, input=history, tools=tools)
assert "a.txt b.txt" in second.output_text, second.output_text

# The same call streamed, assembled by the SDK's stream helper from argument deltas.
with client.responses.stream(model=model, input="again", tools=tools) as s:
    for _ in s:
        pass
    streamed = s.get_final_response()
scall = [o for o in streamed.output if o.type == "function_call"][0]
assert "cmd" in json.loads(scall.arguments), scall

try:
    OpenAI(base_url=base + "/v1", api_key="qp_not_a_real_key", max_retries=0).responses.create(
        model=model, input="x"
    )
    raise SystemExit("expected AuthenticationError")
except openai.AuthenticationError as e:
    assert e.status_code == 401

try:
    OpenAI(base_url=base + "/v1", api_key=exhausted, max_retries=0).responses.create(
        model=model, input="x"
    )
    raise SystemExit("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.status_code == 429
    assert "配额不足" in str(e), str(e)

print("python openai responses OK")
