# Drives the gateway with the official `openai` Python SDK.
# Run: python3 openai_sdk.py BASE_URL API_KEY EXHAUSTED_KEY
import sys

import openai
from openai import OpenAI

base, key, exhausted = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

chat = client.chat.completions.create(
    model="mock-chat", messages=[{"role": "user", "content": "hello sdk"}]
)
assert "hello sdk" in chat.choices[0].message.content, chat
assert chat.usage.completion_tokens > 0

parts = []
with client.chat.completions.create(
    model="mock-chat", messages=[{"role": "user", "content": "stream please"}], stream=True
) as stream:
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
text = "".join(parts)
assert "stream please" in text, text

usage_seen = None
for chunk in client.chat.completions.create(
    model="mock-chat",
    messages=[{"role": "user", "content": "count me"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage_seen = chunk.usage
assert usage_seen is not None and usage_seen.total_tokens > 0

comp = client.completions.create(model="mock-chat", prompt="once upon a time")
assert "once upon a time" in comp.choices[0].text

emb = client.embeddings.create(model="mock-embedding", input=["a", "b", "c"])
assert len(emb.data) == 3 and len(emb.data[0].embedding) == 8

ids = [m.id for m in client.models.list()]
assert "mock-chat" in ids, ids

try:
    OpenAI(base_url=f"{base}/v1", api_key="qp_not_a_real_key", max_retries=0).models.list()
    raise SystemExit("expected AuthenticationError")
except openai.AuthenticationError as e:
    assert e.status_code == 401

try:
    OpenAI(base_url=f"{base}/v1", api_key=exhausted, max_retries=0).chat.completions.create(
        model="mock-chat", messages=[{"role": "user", "content": "x"}]
    )
    raise SystemExit("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.status_code == 429
    assert "配额不足" in str(e), str(e)

print("python openai sdk OK")
