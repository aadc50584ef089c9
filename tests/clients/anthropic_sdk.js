// Drives the gateway's /v1/messages with the official `@anthropic-ai/sdk` Node SDK: a
// message, a stream, a tool round trip, count_tokens and the SDK's error classes.
// Run: node anthropic_sdk.js BASE_URL API_KEY EXHAUSTED_KEY MODEL
const assert = require('assert');
const Anthropic = require('@anthropic-ai/sdk');

(async () => {
  const [base, key, exhausted, model] = process.argv.slice(2);
  const client = new Anthropic({ baseURL: base, apiKey: key, maxRetries: 0 });

  const msg = await client.messages.create({
    model, max_tokens: 64, messages: [{ role: 'user', content: 'hello node anthropic' }],
  });
  assert.strictEqual(msg.type, 'message');
  assert.ok(msg.content[0].text.includes('hello node anthropic'), JSON.stringify(msg));
  assert.ok(msg.usage.output_tokens > 0);

  const stream = client.messages.stream({
    model, max_tokens: 64, messages: [{ role: 'user', content: 'node stream' }],
  });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.ok(text.includes('node stream'), text);
  assert.strictEqual(final.stop_reason, 'end_turn');

  const tools = [{
    name: 'run_command',
    description: 'Run a shell command',
    input_schema: { type: 'object', properties: { command: { type: 'string' } }, required: ['command'] },
  }];
  const first = await client.messages.create({
    model, max_tokens: 64, tools, messages: [{ role: 'user', content: 'run ls' }],
  });
  assert.strictEqual(first.stop_reason, 'tool_use');
  const use = first.content.find((b) => b.type === 'tool_use');
  assert.strictEqual(use.name, 'run_command');
  const second = await client.messages.create({
    model, max_tokens: 64, tools,
    messages: [
      { role: 'user', content: 'run ls' },
      { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'file-a' }] },
    ],
  });
  assert.ok(second.content[0].text.includes('file-a'), JSON.stringify(second));

  const count = await client.messages.countTokens({
    model, messages: [{ role: 'user', content: 'count these tokens' }],
  });
  assert.ok(count.input_tokens > 0);

  try {
    await new Anthropic({ baseURL: base, apiKey: 'qp_not_a_real_key', maxRetries: 0 }).messages.create({
      model, max_tokens: 8, messages: [{ role: 'user', content: 'x' }],
    });
    throw new Error('expected AuthenticationError');
  } catch (e) {
    assert.ok(e instanceof Anthropic.AuthenticationError, String(e));
  }
  try {
    await new Anthropic({ baseURL: base, apiKey: exhausted, maxRetries: 0 }).messages.create({
      model, max_tokens: 8, messages: [{ role: 'user', content: 'x' }],
    });
    throw new Error('expected RateLimitError');
  } catch (e) {
    assert.ok(e instanceof Anthropic.RateLimitError, String(e));
    assert.ok(String(e.message).includes('配额不足'), e.message);
  }
  console.log('node anthropic sdk OK');
})().catch((e) => { console.error(e); process.exit(1); });
