// Leases of calls still running are renewed: a stream longer than store.lease_ms keeps its
// budget and concurrency holds until it ends (a dead gateway's holds still expire: policy.test.mjs
// kills one). Runs on both stores.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { serverYaml, startGateway } from './lib/gateway.mjs';
import { adminToken, budget, chat, settledBudget, staticKey, tally } from './lib/policy_helpers.mjs';
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
      await sleep(200);  // admitted (its first chunk comes at 10 ms) before the others try
      // Admissions all along the stream, each of which sweeps expired leases: a renewal landing
      // after its lease had expired (as with a 1 s renewal tick and a 1 s lease) let one in.
      const statuses = [];
      const t0 = Date.now();
      const tried = [];
      while (Date.now() - t0 < 2200) {  // two lease lengths in: without renewal the hold would have expired
        tried.push(Date.now());
        const second = await chat(gw, key.full, { ...body, stream: false, stream_options: undefined, max_tokens: 1 });
        statuses.push(second.status);
        await sleep(20);
      }
      assertTriedEveryLease(tried, t0);
      assert.deepEqual(tally(statuses), { 429: statuses.length }, 'the running call holds the only concurrency slot throughout');
      const mid = await budget(gw, tok.token, 'long');
      assert.ok(mid.reserved_nano > 0, `hold gone mid-stream: ${JSON.stringify(mid)}`);
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


/**
 * The admissions a test tried while a stream ran (their start times) came all along it, from `t0`
 * to the loop's end (past two 1 s leases): one in every lease period at least. (A count per second
 * measures the machine: under ASan on a busy host a refused call took 300 ms.)
 */
function assertTriedEveryLease(tried, t0) {
  const marks = [t0, ...tried, Date.now()];
  const gaps = marks.slice(1).map((t, i) => t - marks[i]);
  assert.ok(marks.at(-1) - t0 >= 2000, 'the admissions ran past two leases');
  assert.ok(Math.max(...gaps) < 1000, `a gap of ${Math.max(...gaps)} ms between admissions: a whole lease went by untried`);
  assert.ok(tried.length >= 3, `only ${tried.length} admissions tried`);
}

describe('lease renewal while Redis is down (per-instance limits)', () => {
  const tok = adminToken();
  const key = staticKey('renew2');
  let gw, redis;
  before(async () => {
    redis = await startRedis();
    gw = await startGateway(serverYaml({ openAuth: false, freePrices: false, workers: 1 }) +
      `store:\n  type: redis\n  redis: {address: "${redis.address}"}\n  lease_ms: 1000\n` +
      `auth:\n  admin_tokens:\n${tok.yaml}` +
      'providers:\n  - {name: mock, type: mock, ttft_ms: 10, tokens_per_second: 5}\n' +
      'models:\n  - {name: mock-gpt, provider: mock}\nprices:\n  mock-gpt: {input: 1, output: 1}\n' +
      'teams:\n  - name: local\n    limits: {concurrency: 1}\n' +
      `keys:\n  - {id: ${key.id}, team: local, digest: "${key.digest}"}\n`);
    await waitStoreUp(gw, tok.token);
  });
  after(async () => {
    await gw?.stop();
    await redis?.close();
  });

  test('a stream admitted locally keeps its local concurrency slot past lease_ms', async () => {
    await redis.stop();
    const body = { model: 'mock-gpt', stream: true, max_tokens: 15, messages: [{ role: 'user', content: 'hi' }] };
    const running = chat(gw, key.full, body, { timeoutMs: 20000 });
    await sleep(200);
    const statuses = [];
    const t0 = Date.now();
    const tried = [];
    while (Date.now() - t0 < 2200) {  // past two leases: an unrenewed local hold was swept by the next admission
      tried.push(Date.now());
      const second = await chat(gw, key.full, { ...body, stream: false, max_tokens: 1 });
      statuses.push(second.status);
      await sleep(20);
    }
    assertTriedEveryLease(tried, t0);
    assert.deepEqual(tally(statuses), { 429: statuses.length }, 'the local share (1 of concurrency 1) held throughout');
    const r = await running;
    assert.equal(r.status, 200);
    // Its slot comes back when it ends.
    assert.equal((await chat(gw, key.full, { ...body, stream: false, max_tokens: 1 })).status, 200);
  });
});
