// Drives the gateway with the official `openai` Node SDK.
// Run: node openai_sdk.js BASE_URL API_KEY EXHAUSTED_KEY
const assert = require('assert');
const OpenAI = require('openai');

(async () => {
  const [base, key, exhausted] = process.argv.slice(2);
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });

  const chat = await client.chat.completions.create({
    model: 'mock-chat',
    messages: [{ role: 'user', content: 'hello node sdk' }],
  });
  assert.ok(chat.choices[0].message.content.includes('hello node sdk'));
  assert.ok(chat.usage.completion_tokens > 0);

  const stream = await client.chat.completions.create({
    model: 'mock-chat',
    messages: [{ role: 'user', content: 'node stream' }],
    stream: true,
  });
  let text = '';
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content || '';
  }
  assert.ok(text.includes('node stream'), text);

  const comp = await client.completions.create({ model: 'mock-chat', prompt: 'node prompt' });
  assert.ok(comp.choices[0].text.includes('node prompt'));

  const emb = await client.embeddings.create({ model: 'mock-embedding', input: 'vector' });
  assert.strictEqual(emb.data.length, 1);

  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('mock-chat'), ids.join(','));

  try {
    await new OpenAI({ baseURL: `${base}/v1`, apiKey: 'qp_nope', maxRetries: 0 }).models.list();
    assert.fail('expected AuthenticationError');
  } catch (e) {
    assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
  }
  try {
    await new OpenAI({ baseURL: `${base}/v1`, apiKey: exhausted, maxRetries: 0 }).chat.completions.create({
      model: 'mock-chat',
      messages: [{ role: 'user', content: 'x' }],
    });
    assert.fail('expected RateLimitError');
  } catch (e) {
    assert.ok(e instanceof OpenAI.RateLimitError, String(e));
    assert.ok(String(e.message).includes('配额不足'), e.message);
  }
  console.log('node openai sdk OK');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
