# Drives the gateway's /v1/messages with the official `anthropic` Python SDK: a message, a
# stream, a tool round trip, count_tokens, the model list and the SDK's error classes.
# Run: python3 anthropic_sdk.py BASE_URL API_KEY EXHAUSTED_KEY MODEL
import sys

import anthropic
from anthropic import Anthropic

base, key, exhausted, model = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
client = Anthropic(base_url=base, api_key=key, max_retries=0)

msg = client.messages.create(
    model=model, max_tokens=64, system="You are terse.",
    messages=[{"role": "user", "content": "hello anthropic"}],
)
assert msg.type == "message" and msg.role == "assistant", msg
assert msg.content[0].type == "text" and "hello anthropic" in msg.content[0].text, msg
assert msg.stop_reason == "end_turn", msg
assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage

with client.messages.stream(
    model=model, max_tokens=64, messages=[{"role": "user", "content": "stream please"}]
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert "stream please" in text, text
assert final.usage.output_tokens > 0, final.usage
assert final.stop_reason == "end_turn", final

tools = [{
    "name": "write_file",
    "description": "Write a file",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
}]
history = [{"role": "user", "content": "write hello.txt"}]
first = client.messages.create(model=model, max_tokens=64, tools=tools, messages=history)
assert first.stop_reason == "tool_use", first
use = [b for b in first.content if b.type == "tool_use"][0]
assert use.name == "write_file" and set(use.input) == {"path", "content"}, use
history += [
    {"role": "assistant", "content": [b.model_dump() for b in first.content]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "written ok"}]},
]
second = client.messages.create(model=model, max_tokens=64, tools=tools, messages=history)
assert second.stop_reason == "end_turn", second
assert "written ok" in second.content[0].text, second

# The same tool call, streamed: the SDK assembles the input from input_json_delta events.
with client.messages.stream(
    model=model, max_tokens=64, tools=tools, messages=[{"role": "user", "content": "again"}]
) as stream:
    streamed = stream.get_final_message()
suse = [b for b in streamed.content if b.type == "tool_use"][0]
assert streamed.stop_reason == "tool_use" and set(suse.input) == {"path", "content"}, streamed

count = client.messages.count_tokens(
    model=model, messages=[{"role": "user", "content": "how many tokens is this?"}]
)
assert count.input_tokens > 0, count

ids = [m.id for m in client.models.list()]
assert len(ids) > 0, ids

try:
    Anthropic(base_url=base, api_key="qp_not_a_real_key", max_retries=0).messages.create(
        model=model, max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    raise SystemExit("expected AuthenticationError")
except anthropic.AuthenticationError as e:
    assert e.status_code == 401
    assert e.body["type"] == "error", e.body

try:
    Anthropic(base_url=base, api_key=exhausted, max_retries=0).messages.create(
        model=model, max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    raise SystemExit("expected RateLimitError")
except anthropic.RateLimitError as e:
    assert e.status_code == 429
    assert "配额不足" in str(e), str(e)

print("python anthropic sdk OK")
