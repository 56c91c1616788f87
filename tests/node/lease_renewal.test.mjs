// Leases of calls still running are renewed: a stream longer than store.lease_ms keeps its
// budget and concurrency holds until it ends (a dead gateway's holds still expire: policy.test.mjs
// kills one). Runs on both stores.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { serverYaml, startGateway } from './lib/gateway.mjs';
import { adminToken, budget, chat, settledBudget, staticKey } from './lib/policy_helpers.mjs';
import { startRedis, waitStoreUp } from './lib/redis.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

for (const kind of ['memory', 'redis']) {
  describe(`lease renewal (${kind} store)`, () => {
    const tok = adminToken();
    const key = staticKey('renew1');
    let gw, redis;
    before(async () => {
      let store = 'store:\n  type: memory\n  lease_ms: 1000\n';
      if (kind === 'redis') {
        redis = await startRedis();
        store = `store:\n  type: redis\n  redis: {address: "${redis.address}"}\n  lease_ms: 1000\n`;
      }
      gw = await startGateway(serverYaml({ openAuth: false, freePrices: false, workers: 1 }) + store +
        `auth:\n  admin_tokens:\n${tok.yaml}` +
        'providers:\n  - {name: mock, type: mock, ttft_ms: 10, tokens_per_second: 5}\n' +
        'models:\n  - {name: mock-gpt, provider: mock}\nprices:\n  mock-gpt: {input: 1000, output: 1000}\n' +
        'teams:\n  - name: long\n    limits: {concurrency: 1}\n    budget: {usd: 100, period: total}\n' +
        `keys:\n  - {id: ${key.id}, team: long, digest: "${key.digest}"}\n`);
      if (kind === 'redis') await waitStoreUp(gw, tok.token);
    });
    after(async () => {
      await gw?.stop();
      await redis?.close();
    });

    test('a 3 s stream with a 1 s lease keeps its hold while it runs, and is charged once at the end', async () => {
      const body = {
        model: 'mock-gpt', stream: true, stream_options: { include_usage: true }, max_tokens: 15, messages: [{ role: 'user', content: 'hi' }],
      };
      const running = chat(gw, key.full, body, { timeoutMs: 20000 });
      await sleep(2200);  // two lease lengths in: without renewal the hold would have expired
      const mid = await budget(gw, tok.token, 'long');
      assert.ok(mid.reserved_nano > 0, `hold gone mid-stream: ${JSON.stringify(mid)}`);
      const second = await chat(gw, key.full, { ...body, stream: false, stream_options: undefined, max_tokens: 1 });
      assert.equal(second.status, 429, 'the running call still holds the only concurrency slot');
      const r = await running;
      assert.equal(r.status, 200);
      const end = await settledBudget(gw, tok.token, 'long', { pred: (b) => b.spent_nano > 0 });
      assert.equal(end.reserved_nano, 0);
      // Charged once, for what it used: prompt estimate ⌈(2 + 16) / 4⌉ = 5 tokens and 15 generated,
      // at 1,000 USD per million tokens each (1e6 nano-USD a token). The refused call costs nothing;
      // a renewal that charged, or a settlement applied twice, would show here.
      const tokens = r.text.match(/"completion_tokens":(\d+)/);
      assert.ok(tokens, `the stream reported no usage: ${r.text.slice(-400)}`);
      assert.equal(Number(tokens[1]), 15);
      assert.equal(end.spent_nano, (5 + 15) * 1e6, JSON.stringify(end));
    });
  });
}
