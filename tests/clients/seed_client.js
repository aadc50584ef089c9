// The Node.js client class from the seed guide (quota-proxy API 使用指南), unchanged,
// followed by checks of what it returns. Run: node seed_client.js BASE_URL API_KEY QUOTA
const axios = require('axios');

class QuotaProxyClient {
  constructor(baseUrl, apiKey) {
    this.baseUrl = baseUrl;
    this.apiKey = apiKey;
    this.client = axios.create({
      baseURL: baseUrl,
      headers: {
        'X-API-Key': apiKey,
        'Content-Type': 'application/json'
      }
    });
  }

  async validateKey() {
    const response = await this.client.get('/api/v1/validate');
    return response.data;
  }

  async useQuota(amount, reason, metadata = null) {
    const data = {
      amount,
      reason
    };
    if (metadata) {
      data.metadata = metadata;
    }
    
    const response = await this.client.post('/api/v1/use', data);
    return response.data;
  }

  async getQuota() {
    const response = await this.client.get('/api/v1/quota');
    return response.data;
  }
}

// 使用示例
const assert = require('assert');
(async () => {
  const [base, key, quotaText] = process.argv.slice(2);
  const quota = Number(quotaText);
  const client = new QuotaProxyClient(base, key);
  const v = await client.validateKey();
  console.log(v);
  assert.strictEqual(v.valid, true);
  assert.strictEqual(v.remaining, quota);
  const u = await client.useQuota(1, 'test_call', { model: 'gpt-4' });
  console.log(u);
  assert.strictEqual(u.success, true);
  assert.strictEqual(u.remaining, quota - 1);
  const q = await client.getQuota();
  console.log(q);
  assert.strictEqual(q.used, 1);
  // A refused call surfaces the documented error body through axios.
  try {
    await client.useQuota(quota * 10, 'too_much');
    assert.fail('expected 429');
  } catch (e) {
    assert.strictEqual(e.response.status, 429);
    assert.strictEqual(e.response.data.error.code, 'QUOTA_EXCEEDED');
  }
  console.log('node seed client OK');
})().catch((e) => { console.error(e); process.exit(1); });
