// Drives the gateway's /v1/responses with the official `openai` Node SDK: a plain response,
// a stream, a function-call round trip and the SDK's error classes.
// Run: node openai_responses.js BASE_URL API_KEY EXHAUSTED_KEY MODEL
const assert = require('assert');
const OpenAI = require('openai');

(async () => {
  const [base, key, exhausted, model] = process.argv.slice(2);
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });

  const r = await client.responses.create({ model, input: 'hello node responses' });
  assert.strictEqual(r.status, 'completed');
  assert.ok(r.output_text.includes('hello node responses'), JSON.stringify(r));
  assert.ok(r.usage.output_tokens > 0);

  const stream = await client.responses.create({ model, input: 'node stream', stream: true });
  let text = '';
  let last;
  for await (const ev of stream) {
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    last = ev;
  }
  assert.ok(text.includes('node stream'), text);
  assert.strictEqual(last.type, 'response.completed');
  assert.ok(last.response.usage.output_tokens > 0);

  const tools = [{
    type: 'function',
    name: 'write_file',
    description: 'Write a file',
    parameters: {
      type: 'object',
      properties: { path: { type: 'string' }, content: { type: 'string' } },
      required: ['path', 'content'],
    },
  }];
  const input = [{ role: 'user', content: 'write it' }];
  const first = await client.responses.create({ model, input, tools });
  const call = first.output.find((o) => o.type === 'function_call');
  assert.ok(call && call.name === 'write_file', JSON.stringify(first.output));
  const args = JSON.parse(call.arguments);
  assert.ok('path' in args && 'content' in args, call.arguments);
  input.push(...first.output);
  input.push({ type: 'function_call_output', call_id: call.call_id, output: 'saved fine' });
  const second = await client.responses.create({ model, input, tools });
  assert.ok(second.output_text.includes('saved fine'), second.output_text);

  const s = client.responses.stream({ model, input: 'again', tools });
  const streamed = await s.finalResponse();
  const scall = streamed.output.find((o) => o.type === 'function_call');
  assert.ok(scall && 'path' in JSON.parse(scall.arguments), JSON.stringify(streamed.output));

  await assert.rejects(
    new OpenAI({ baseURL: `${base}/v1`, apiKey: 'qp_not_a_real_key', maxRetries: 0 })
      .responses.create({ model, input: 'x' }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
  await assert.rejects(
    new OpenAI({ baseURL: `${base}/v1`, apiKey: exhausted, maxRetries: 0 })
      .responses.create({ model, input: 'x' }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429,
  );
  console.log('node openai responses OK');
})().catch((e) => { console.error(e); process.exit(1); });
