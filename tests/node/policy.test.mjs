// Callers, teams, rate limits and USD budgets on one gateway, with the embedded (memory) store and
// with a real redis-server: budgets under a race, billing of cut and usage-less streams, the
// official SDK's view of 401/403/429, keys through the admin API, a Redis outage and recovery,
// a gateway killed while holding reservations, and secrets that must never be echoed.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI, { AuthenticationError, PermissionDeniedError, RateLimitError } from 'openai';

import { loadFixtures, noUsageStreamChunks, startFakeOpenAI } from './lib/fake_openai.mjs';
import { assertOpenAIError, eventually, fetchT, httpRequest, rawExchange, serverYaml, startGateway } from './lib/gateway.mjs';
import {
  admin,
  adminToken,
  budget,
  chat,
  createKey,
  metricValue,
  randomAlnum,
  scrape,
  settledBudget,
  splitKey,
  staticKey,
  tally,
} from './lib/policy_helpers.mjs';
import { redisCommand, startRedis, startRedisRelay, waitStoreUp } from './lib/redis.mjs';
import { readSse } from './lib/sse.mjs';

// Prices (USD per million tokens) chosen so costs are whole nano-USD: a prompt token costs
// 1000 × 1000 = 1e6 nano-USD, a completion token 2e6.
const IN_PRICE = 1000;
const OUT_PRICE = 2000;
const nanoOf = (prompt, completion) => prompt * IN_PRICE * 1000 + completion * OUT_PRICE * 1000;

// The gateway's prompt estimate: ceil(chars / 4), where chars counts each message's content plus
// 16 for its role and framing. The calibration test checks this against the mock's usage.
const PROMPT = 'Count to three.';
const MSGS = [{ role: 'user', content: PROMPT }];
const PROMPT_EST = Math.ceil((PROMPT.length + 16) / 4);
const MAX = 4;
/** Cost of one mock call with MSGS and max_tokens MAX: reservation and actual are equal. */
const CALL_NANO = nanoOf(PROMPT_EST, MAX);
const RACE_CALLS = 20;
const RACE_NANO = RACE_CALLS * CALL_NANO;
const usd = (nano) => String(nano / 1e9);

const body = (model, extra = {}) => ({ model, messages: MSGS, max_tokens: MAX, ...extra });

function prices() {
  return `prices:
  "mock-*": {input: ${IN_PRICE}, output: ${OUT_PRICE}}
  "fake-*": {input: ${IN_PRICE}, output: ${OUT_PRICE}}
  "dear-model": {input: ${3 * IN_PRICE}, output: ${3 * OUT_PRICE}}
  "other-*": {input: 0, output: 0}
`;
}

function mockModels(fakeURL) {
  return `providers:
  - {name: mock, type: mock}
  - {name: mock-slow, type: mock, ttft_ms: 200}
  - {name: mock-hold, type: mock, ttft_ms: 700}
  - {name: mock-long, type: mock, ttft_ms: 30000}
  - {name: mock-paced, type: mock, ttft_ms: 20, tokens_per_second: 20}
${
  fakeURL
    ? `  - name: fake
    type: openai_compatible
    base_url: ${fakeURL}
    proxy: none
    timeouts: {first_byte_ms: 5000, idle_ms: 5000}
`
    : ''
}models:
  - {name: mock-gpt, provider: mock}
  - {name: mock-slow, provider: mock-slow}
  - {name: mock-hold, provider: mock-hold}
  - {name: mock-long, provider: mock-long}
  - {name: mock-paced, provider: mock-paced}
  - {name: other-gpt, provider: mock}
${
  fakeURL
    ? `  - {name: fake-nousage, provider: fake, upstream_model: no-usage-stream}
  - {name: fake-nullout, provider: fake, upstream_model: null-output-usage}
  - {name: fake-floatusage, provider: fake, upstream_model: float-usage}
  - {name: fake-slowwhole, provider: fake, upstream_model: slow-stream}
  - {name: fake-slowbody, provider: fake, upstream_model: slow-body}
  - {name: fake-cutbody, provider: fake, upstream_model: reset-mid-body, fallbacks: [{provider: fake, upstream_model: fixture-text}]}
  - {name: fake-503-mock, provider: fake, upstream_model: error-503, fallbacks: [{provider: mock}]}
  - {name: fake-503-dear, provider: fake, upstream_model: error-503, fallbacks: [{provider: fake, upstream_model: dear-model}]}
`
    : ''
}`;
}

// timeoutMs: the outage tests keep the default 50 ms, so that a stopped Redis fails fast; the main
// behaviours give Redis a second, so that a slow sanitizer build under -j2 is never mistaken for an
// outage (a 503 where the test asserts a 200 or a 429).
function storeYaml(kind, redis, extra = '', { timeoutMs = 50 } = {}) {
  if (kind === 'memory') return `store:\n  type: memory\n${extra}`;
  return `store:
  type: redis
  redis: {address: "${redis.address}", key_prefix: "tgtest:", timeout_ms: ${timeoutMs}, connect_timeout_ms: 200}
${extra}`;
}

/** Every key in a Redis and every value it holds, as text (strings, hashes, sets, sorted sets, lists). */
async function redisContents(port) {
  const read = { string: ['GET'], hash: ['HGETALL'], set: ['SMEMBERS'], zset: ['ZRANGE', '0', '-1', 'WITHSCORES'], list: ['LRANGE', '0', '-1'] };
  const out = [];
  for (const k of await redisCommand(port, ['KEYS', '*'])) {
    const type = String(await redisCommand(port, ['TYPE', k]));
    out.push(String(k));
    if (read[type]) out.push(JSON.stringify(await redisCommand(port, [read[type][0], k, ...read[type].slice(1)])));
  }
  return out.join('\n');
}

/** Everything a gateway returns to any caller should be an error body or a response; collect. */
async function settleAll(promises) {
  const out = await Promise.allSettled(promises);
  return out.map((r) => (r.status === 'fulfilled' ? r.value : { status: 'network-error', error: r.reason }));
}

// ---------------------------------------------------------------------------------------------
// The main behaviours, once per store.

for (const kind of ['memory', 'redis']) {
  describe(`policy with the ${kind} store`, () => {
    const adm = adminToken();
    const expired = staticKey('expired1');
    const disabled = staticKey('disabled1');
    let redis;
    let fake;
    let gw;
    const keys = {};
    /** Starts a slow call (mock-hold, 700 ms) on `key` and waits until it is admitted, holding a
     * concurrency slot; `done` is the call. */
    const holdSlot = async (key) => {
      const admitted = async () => metricValue(await scrape(gw), 'tollgate_policy_decisions_total', { decision: 'admitted' });
      const before = await admitted();
      const done = chat(gw, key, body('mock-hold'));
      await eventually(async () => (await admitted()) > before, { timeoutMs: 3000, intervalMs: 10, what: 'the slow call admitted' });
      return { done };
    };

    before(async () => {
      if (kind === 'redis') redis = await startRedis();
      fake = await startFakeOpenAI();
      const yaml =
        serverYaml({ workers: 2, openAuth: false, freePrices: false }) +
        `auth:
  required: true
  admin_tokens:
${adm.yaml}${prices()}${storeYaml(kind, redis, '', { timeoutMs: 1000 })}teams:
  - name: race
    models: ["mock-*"]
    budget: {usd: ${usd(RACE_NANO)}, period: daily, soft: 0.5}
  - name: stream
    budget: {usd: 100, period: daily, soft: 0}
  - name: conc
    limits: {concurrency: 1}
  - name: broke
    budget: {usd: 0.000001, period: total, soft: 0}
  - name: search
    models: ["mock-*"]
  - name: narrow
    models: ["mock-gpt"]
  - name: free
  - name: sepa
    limits: {rpm: 3}
    budget: {usd: 1, period: daily, soft: 0}
  - name: sepb
    limits: {rpm: 3}
    budget: {usd: 1, period: daily, soft: 0}
  - name: hdrs
    limits: {rpm: 5, tpm: 100}
  - name: hdrq
    limits: {rpm: 100, tpm: 100000, concurrency: 1}
    budget: {usd: ${usd(2 * CALL_NANO)}, period: total, soft: 0}
  - name: dear
    budget: {usd: ${usd(2 * CALL_NANO)}, period: total, soft: 0}
  - name: capd
    limits: {tpm: 10000}
    budget: {usd: 100, period: daily, soft: 0}
keys:
  - {id: ${expired.id}, team: search, digest: "${expired.digest}", expires: 2020-01-31}
  - {id: ${disabled.id}, team: search, digest: "${disabled.digest}", enabled: false}
` +
        mockModels(fake.baseURL);
      gw = await startGateway(yaml);
      if (kind === 'redis') await waitStoreUp(gw, adm.token);
      for (const team of ['race', 'stream', 'conc', 'broke', 'search', 'narrow', 'free', 'sepa', 'sepb', 'hdrq', 'capd', 'dear']) {
        keys[team] = (await createKey(gw, adm.token, { team, name: `${team}-key` })).key;
      }
      // Its own requests limit, below its team's.
      keys.hdrs = (await createKey(gw, adm.token, { team: 'hdrs', name: 'hdrs-key', limits: { rpm: 2 } })).key;
      // Limits of a key's own, in a team without any.
      keys.kown = (await createKey(gw, adm.token, { team: 'free', name: 'kown-key', limits: { concurrency: 1, tpm: 2 * (PROMPT_EST + MAX) } })).key;
    });

    after(async () => {
      try {
        if (gw?.alive) await gw.stopClean();
      } finally {
        await gw?.kill();
        await fake?.close();
        await redis?.close();
      }
    });

    test('calibration: the mock bills the prompt estimate and max_tokens (reservation == actual cost)', { timeout: 10000 }, async () => {
      const r = await chat(gw, keys.free, body('mock-gpt'));
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(
        { prompt: r.json.usage.prompt_tokens, completion: r.json.usage.completion_tokens },
        { prompt: PROMPT_EST, completion: MAX },
        'prompt estimate formula changed: the budget numbers below assume ceil((chars + 16) / 4)',
      );
    });

    const raceName =
      `budget race: ${RACE_CALLS * 10} concurrent calls, a budget of exactly ${RACE_CALLS} → ` +
      `${RACE_CALLS} admitted, the rest budget_exceeded, spent ≤ budget`;
    test(raceName, { timeout: 30000 }, async () => {
      const before = await budget(gw, adm.token, 'race');
      assert.equal(before.spent_nano, 0);
      assert.equal(before.reserved_nano, 0);
      assert.equal(Math.round(before.limit_usd * 1e9), RACE_NANO);

      const results = await settleAll(
        Array.from({ length: RACE_CALLS * 10 }, () => chat(gw, keys.race, body('mock-slow'), { timeoutMs: 20000 })),
      );
      const statuses = tally(results.map((r) => r.status));
      assert.deepEqual(statuses, { 200: RACE_CALLS, 429: RACE_CALLS * 9 }, `statuses ${JSON.stringify(statuses)}`);
      let heldRefusals = 0;
      for (const r of results) {
        if (r.status === 200) {
          assert.deepEqual([r.json.usage.prompt_tokens, r.json.usage.completion_tokens], [PROMPT_EST, MAX]);
        } else {
          // Refused while the admitted calls held the budget: their settlements may free some,
          // so a wait is given (the SDKs retry a 429 at Retry-After). One refused after they were
          // all settled (a slow sanitizer run) finds it spent: no wait helps.
          assertOpenAIError(r, { status: 429, code: 'budget_exceeded', type: 'insufficient_quota' });
          const held = r.headers.get('retry-after') === '1';
          heldRefusals += held ? 1 : 0;
          assert.equal(r.headers.get('x-should-retry'), held ? null : 'false');
        }
      }
      assert.ok(heldRefusals > 0, 'every refusal came after the budget was spent');
      const b = await settledBudget(gw, adm.token, 'race', { pred: (x) => x.spent_nano >= RACE_NANO });
      assert.ok(b.spent_nano <= RACE_NANO, `spent ${b.spent_nano} over the budget ${RACE_NANO}`);
      assert.equal(b.spent_nano, RACE_CALLS * CALL_NANO);
      // One more call is refused: the period's budget is spent, and no wait helps.
      const again = await chat(gw, keys.race, body('mock-gpt'));
      assertOpenAIError(again, { status: 429, code: 'budget_exceeded' });
      assert.equal(again.headers.get('x-should-retry'), 'false');
      assert.equal(again.headers.get('retry-after'), null);
      // The soft threshold (0.5) was crossed once, for the team scope.
      const m = await scrape(gw);
      assert.equal(metricValue(m, 'tollgate_budget_soft_threshold_total', { team: 'race', scope: 'team' }), 1);
      assert.ok(metricValue(m, 'tollgate_policy_decisions_total', { decision: 'budget' }) >= RACE_CALLS * 9);
      // Every one of those calls waited for an admission, and that wait is in the histogram.
      const waits = metricValue(m, 'tollgate_policy_admission_seconds_count');
      assert.ok(waits >= RACE_CALLS * 10, `admission waits observed: ${waits}`);
      assert.equal(metricValue(m, 'tollgate_policy_admission_seconds_bucket', { le: '+Inf' }), waits);
      assert.ok(metricValue(m, 'tollgate_policy_admission_seconds_sum') > 0);
    });

    test('a stream its client cuts mid-way is billed for what was sent, not the reservation', { timeout: 20000 }, async () => {
      const before = await settledBudget(gw, adm.token, 'stream');
      const MAX_STREAM = 60; // 3 s at 20 tokens/s
      const ac = new AbortController();
      const res = await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.stream}` },
        body: JSON.stringify(body('mock-paced', { max_tokens: MAX_STREAM, stream: true, stream_options: { include_usage: true } })),
        signal: ac.signal,
      });
      assert.equal(res.status, 200);
      let content = 0;
      const sse = await readSse(res, {
        onEvent: (ev) => {
          if (ev.json?.choices?.[0]?.delta?.content) content++;
          return content < 5;
        },
      });
      assert.ok(sse.stopped, 'the client stopped reading');
      ac.abort();
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      const spent = b.spent_nano - before.spent_nano;
      const promptPart = nanoOf(PROMPT_EST, 0);
      assert.ok(spent > promptPart, `spent ${spent} must exceed the prompt part ${promptPart}`);
      const billedTokens = (spent - promptPart) / (OUT_PRICE * 1000);
      assert.ok(Number.isInteger(billedTokens), `billed completion is a whole number of tokens: ${billedTokens}`);
      assert.ok(billedTokens >= content, `billed ${billedTokens} tokens, the client received ${content}`);
      assert.ok(billedTokens <= content + 10, `billed ${billedTokens} tokens but the stream was cut after ${content}`);
      assert.ok(spent < nanoOf(PROMPT_EST, MAX_STREAM), 'billed less than the worst case');
      const line = await gw.waitForLog((l) => l.team === 'stream' && l.model === 'mock-paced');
      assert.equal(line.status, 200);
      assert.equal(line.completion_tokens, billedTokens, `access log: ${JSON.stringify(line)}`);
    });

    test('a stream whose upstream never sends usage is billed from the relayed output', { timeout: 20000 }, async () => {
      const before = await settledBudget(gw, adm.token, 'stream');
      const req = body('fake-nousage', { stream: true, stream_options: { include_usage: true } });
      delete req.max_tokens;
      const res = await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.stream}` },
        body: JSON.stringify(req),
      });
      assert.equal(res.status, 200);
      const sse = await readSse(res);
      assert.ok(sse.done && sse.ended, 'stream completes');
      assert.ok(sse.events.every((e) => !e.json?.usage), 'the upstream sent no usage, so neither does the gateway');
      // The gateway asked the upstream for usage anyway.
      const rec = await fake.waitForRequest((r) => r.body?.model === 'no-usage-stream');
      assert.equal(rec.body.stream_options?.include_usage, true);
      // What it counted: bytes of delta text relayed (one more for each character of three or
      // four UTF-8 bytes, about a token on its own), /4 rounded up.
      const tokenChars = (t) => {
        const b = Buffer.from(t);
        return b.length + b.filter((x) => x >= 0xe0).length;
      };
      const chars = noUsageStreamChunks(rec.body).reduce((n, c) => {
        for (const ch of c.choices ?? [])
          for (const k of ['content', 'reasoning', 'reasoning_content', 'refusal'])
            // (vLLM's alias reasoning_content repeats reasoning: counted only alone)
            if (typeof ch.delta?.[k] === 'string' && !(k === 'reasoning_content' && 'reasoning' in ch.delta)) n += tokenChars(ch.delta[k]);
        return n;
      }, 0);
      const completion = Math.ceil(chars / 4);
      assert.ok(completion > 0);
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      const spent = b.spent_nano - before.spent_nano;
      assert.ok(spent > nanoOf(PROMPT_EST, 0), `completion part must be billed: spent ${spent}`);
      assert.equal(spent, nanoOf(PROMPT_EST, completion));
      const line = await gw.waitForLog((l) => l.model === 'fake-nousage');
      assert.equal(line.usage_source, 'counted');
      assert.equal(line.completion_tokens, completion);
    });

    test('a whole answer without usage is billed from its generated text, not as the prompt alone', { timeout: 20000 }, async () => {
      const before = await settledBudget(gw, adm.token, 'stream');
      const req = body('fake-nousage');
      delete req.max_tokens;
      const r = await chat(gw, keys.stream, req);
      assert.equal(r.status, 200, r.text);
      assert.ok(!('usage' in r.json), 'the upstream sent no usage');
      // Counted as a stream's relayed text is: token_chars of the message's content, /4 rounded up.
      const content = r.json.choices[0].message.content;
      const b8 = Buffer.from(content);
      const completion = Math.ceil((b8.length + b8.filter((x) => x >= 0xe0).length) / 4);
      assert.ok(completion > 0);
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, nanoOf(PROMPT_EST, completion));
      const line = await gw.waitForLog((l) => l.model === 'fake-nousage' && l.stream === false);
      assert.equal(line.usage_source, 'counted');
      assert.equal(line.completion_tokens, completion);
    });

    test('a whole answer whose usage gives no output count is billed from its text; counts written as 19.0 are read as 19', { timeout: 20000 }, async () => {
      const fixture = loadFixtures().chatText;
      const content = fixture.choices[0].message.content;
      const b8 = Buffer.from(content);
      const counted = Math.ceil((b8.length + b8.filter((x) => x >= 0xe0).length) / 4);
      assert.ok(counted > 0 && counted !== fixture.usage.completion_tokens, 'the counted output differs from the reported one');
      // `"completion_tokens": null`: the reported prompt, the output counted from the answer's text.
      let before = await settledBudget(gw, adm.token, 'stream');
      let r = await chat(gw, keys.stream, body('fake-nullout'));
      assert.equal(r.status, 200, r.text);
      let b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, nanoOf(fixture.usage.prompt_tokens, counted), 'billed the answer\'s output, not 0');
      let line = await gw.waitForLog((l) => l.model === 'fake-nullout');
      assert.equal(line.completion_tokens, counted);
      // Counts with a fraction: the provider's own counts, not 0 (and not the text's count).
      before = b;
      r = await chat(gw, keys.stream, body('fake-floatusage'));
      assert.equal(r.status, 200, r.text);
      b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, nanoOf(fixture.usage.prompt_tokens, fixture.usage.completion_tokens));
      line = await gw.waitForLog((l) => l.model === 'fake-floatusage');
      assert.equal(line.prompt_tokens, fixture.usage.prompt_tokens);
      assert.equal(line.completion_tokens, fixture.usage.completion_tokens);
    });

    test('a fallback to a dearer model is reserved and billed at its own price, not the public model\'s', { timeout: 20000 }, async () => {
      // fake-503-dear: its primary answers 503, its fallback is dear-model, priced 3x fake-*.
      const fixture = loadFixtures().chatText;
      const before = await settledBudget(gw, adm.token, 'stream');
      const r = await chat(gw, keys.stream, body('fake-503-dear'));
      assert.equal(r.status, 200, r.text);
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, 3 * nanoOf(fixture.usage.prompt_tokens, fixture.usage.completion_tokens),
        'billed at the fallback\'s price');
      // Team dear's budget covers the call's worst case at the public price (CALL_NANO) twice, but
      // not once at the fallback's (3 x CALL_NANO): which target answers is not known at admission.
      const refused = await chat(gw, keys.dear, body('fake-503-dear'));
      assertOpenAIError(refused, { status: 429, code: 'budget_exceeded' });
      const single = await chat(gw, keys.dear, body('fake-nousage'));
      assert.equal(single.status, 200, single.text);
    });

    test('a whole answer whose caller left before its head arrived is still awaited and billed its reported usage', { timeout: 20000 }, async () => {
      // The provider generates a whole answer once it has the request, whether the caller waits or
      // not, and charges for it: a caller that leaves early (a client timeout) must not make it free.
      const fixture = loadFixtures().chatText;
      const before = await settledBudget(gw, adm.token, 'stream');
      const ac = new AbortController();
      const sent = fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.stream}` },
        body: JSON.stringify(body('fake-slowwhole')),
        signal: ac.signal,
      }).catch((e) => e);
      // The fake answers 600 ms after the request; the caller leaves once the request is upstream.
      await fake.waitForRequest((r) => r.body?.model === 'slow-stream' && r.body?.stream !== true);
      await sleep(150);
      ac.abort();
      assert.ok((await sent) instanceof Error, 'the caller aborted');
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, nanoOf(fixture.usage.prompt_tokens, fixture.usage.completion_tokens));
      const line = await gw.waitForLog((l) => l.model === 'fake-slowwhole');
      assert.equal(line.details, 'client_disconnected');
      assert.equal(line.usage_source, 'provider');
    });

    test('a whole answer whose caller left after its head arrived is read to the end and billed its reported usage', { timeout: 20000 }, async () => {
      const before = await settledBudget(gw, adm.token, 'stream');
      const ac = new AbortController();
      const sent = fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.stream}` },
        body: JSON.stringify(body('fake-slowbody')),
        signal: ac.signal,
      }).catch((e) => e);
      // The fake sent the 200 head and half the body; its rest comes 1.2 s later. The caller
      // leaves well after the gateway's disconnect watch is armed (50-100 ms).
      await fake.waitForRequest((r) => r.body?.model === 'slow-body');
      await sleep(300);
      ac.abort();
      await sent;
      const { usage } = loadFixtures().chatText;
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, nanoOf(usage.prompt_tokens, usage.completion_tokens));
      const line = await gw.waitForLog((l) => l.model === 'fake-slowbody');
      assert.equal(line.usage_source, 'provider', JSON.stringify(line));
      assert.equal(line.completion_tokens, usage.completion_tokens);
      assert.equal(line.details, 'client_disconnected');
    });

    test('a whole answer whose body the upstream cut is billed at its reservation, and no fallback runs it again', { timeout: 20000 }, async () => {
      const before = await settledBudget(gw, adm.token, 'stream');
      const fallbacks = fake.requestsFor('fixture-text').length;
      const r = await chat(gw, keys.stream, body('fake-cutbody'));
      assertOpenAIError(r, { status: 502, code: 'upstream_error' });
      // The provider generated (and charged for) the answer; its usage went with the body.
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, nanoOf(PROMPT_EST, MAX));
      const line = await gw.waitForLog((l) => l.model === 'fake-cutbody');
      assert.equal(line.completion_tokens, MAX, JSON.stringify(line));
      assert.equal(line.usage_source, 'counted');
      await sleep(200);
      assert.equal(fake.requestsFor('fixture-text').length, fallbacks, 'the fallback was not called');
    });

    test('a built-in fallback that answers after a remote provider\'s 503 is billed its usage', { timeout: 20000 }, async () => {
      const before = await settledBudget(gw, adm.token, 'stream');
      const tried = fake.requestsFor('error-503').length;
      const r = await chat(gw, keys.stream, body('fake-503-mock'));
      assert.equal(r.status, 200, r.text);
      assert.equal(fake.requestsFor('error-503').length, tried + 1, 'the remote provider was tried first');
      const b = await settledBudget(gw, adm.token, 'stream', { pred: (x) => x.spent_nano > before.spent_nano });
      assert.equal(b.spent_nano - before.spent_nano, nanoOf(r.json.usage.prompt_tokens, r.json.usage.completion_tokens));
    });

    test('a key sent only as a chunked body\'s trailer is not read (401); the same key in the head is', { timeout: 20000 }, async () => {
      const payload = JSON.stringify(body('mock-gpt'));
      const chunked = `${payload.length.toString(16)}\r\n${payload}\r\n0\r\n`;
      const request = (headKey, trailers) =>
        'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n' +
        (headKey ? `Authorization: Bearer ${headKey}\r\n` : '') +
        `Transfer-Encoding: chunked\r\n\r\n${chunked}${trailers}\r\n`;
      for (const trailer of [`Authorization: Bearer ${keys.free}\r\n`, `api-key: ${keys.free}\r\n`, `x-api-key: ${keys.free}\r\n`]) {
        const raw = await rawExchange(gw.port, [request('', trailer)]);
        assert.equal(raw.response?.status, 401, `${trailer.split(':')[0]}: ${raw.text.slice(0, 300)}`);
        assert.equal(raw.response.json?.error?.code, 'invalid_api_key');
        assert.ok(!raw.text.includes(keys.free), 'the key is not echoed');
      }
      const ok = await rawExchange(gw.port, [request(keys.free, '')]);
      assert.equal(ok.response?.status, 200, ok.text.slice(0, 300));
    });

    test('behind an ingress that sends Authorization: Basic, the api-key and x-api-key headers still count', { timeout: 20000 }, async () => {
      const basic = { authorization: 'Basic aW5ncmVzczpwYXNz' };
      for (const header of ['api-key', 'x-api-key']) {
        const r = await chat(gw, keys.free, body('mock-gpt'), { header, extraHeaders: basic });
        assert.equal(r.status, 200, `${header} beside Basic: ${r.text}`);
      }
      assertOpenAIError(await chat(gw, undefined, body('mock-gpt'), { extraHeaders: basic }), { status: 401, code: 'invalid_api_key' });
      // A tab after "Bearer" is taken as a space.
      const tab = await chat(gw, undefined, body('mock-gpt'), { extraHeaders: { authorization: `Bearer\t${keys.free}` } });
      assert.equal(tab.status, 200, tab.text);
      // An SDK's placeholder in Authorization does not hide the key in api-key or x-api-key.
      for (const header of ['api-key', 'x-api-key']) {
        const r = await chat(gw, keys.free, body('mock-gpt'), { header, extraHeaders: { authorization: 'Bearer sk-placeholder' } });
        assert.equal(r.status, 200, `${header} beside a placeholder: ${r.text}`);
      }
      // A key without "Bearer", or after another scheme, is checked as a key: good, 200; bad, 401.
      for (const authorization of [keys.free, `Token ${keys.free}`]) {
        const r = await chat(gw, undefined, body('mock-gpt'), { extraHeaders: { authorization } });
        assert.equal(r.status, 200, `${authorization.split(' ')[0]}: ${r.text}`);
        const bad = await chat(gw, undefined, body('mock-gpt'), { extraHeaders: { authorization: `${authorization}x` } });
        assertOpenAIError(bad, { status: 401, code: 'invalid_api_key' });
        assert.match(bad.json.error.message, /Incorrect API key/, 'the key was read, not taken for a missing one');
      }
    });

    test('OpenAI SDK: 401 AuthenticationError, 403 PermissionDeniedError, 429 RateLimitError (budget: no retry)', { timeout: 20000 }, async () => {
      const sdk = (apiKey, opts = {}) => new OpenAI({ apiKey, baseURL: gw.baseURL, maxRetries: 0, timeout: 10000, ...opts });
      const expectError = (p) => p.then((v) => assert.fail(`expected an error, got ${JSON.stringify(v).slice(0, 200)}`), (e) => e);

      for (const bad of [`tg_nosuchid_${randomAlnum(30)}`, `${keys.free.slice(0, -3)}xyz`, 'sk-not-a-tollgate-key']) {
        const e = await expectError(sdk(bad).chat.completions.create(body('mock-gpt')));
        assert.ok(e instanceof AuthenticationError, `${bad}: ${e}`);
        assert.equal(e.status, 401);
        assert.equal(e.code, 'invalid_api_key');
      }

      const e403 = await expectError(sdk(keys.narrow).chat.completions.create(body('mock-slow')));
      assert.ok(e403 instanceof PermissionDeniedError, String(e403));
      assert.equal(e403.status, 403);
      assert.equal(e403.code, 'model_not_allowed');
      assert.equal(e403.type, 'permission_denied');

      // A spent budget: 429 with x-should-retry: false, so even maxRetries 2 makes one attempt.
      const attempts = [];
      const counting = (url, init) => {
        attempts.push(Date.now());
        return fetch(url, init);
      };
      const e429 = await expectError(sdk(keys.broke, { maxRetries: 2, fetch: counting }).chat.completions.create(body('mock-gpt')));
      assert.ok(e429 instanceof RateLimitError, String(e429));
      assert.equal(e429.code, 'budget_exceeded');
      assert.equal(e429.type, 'insufficient_quota');
      assert.equal(e429.headers.get('x-should-retry'), 'false');
      assert.equal(attempts.length, 1, 'the SDK must not retry a spent budget');
    });

    test('concurrency 429 has Retry-After; the SDK with maxRetries waits that long and succeeds', { timeout: 20000 }, async () => {
      // Hold the team's only slot with a slow call.
      let holdDoneAt;
      const hold = (await holdSlot(keys.conc)).done.then((r) => {
        holdDoneAt = Date.now();
        return r;
      });

      const e = await new OpenAI({ apiKey: keys.conc, baseURL: gw.baseURL, maxRetries: 0 }).chat.completions
        .create(body('mock-gpt'))
        .then(() => assert.fail('expected 429 while the slot is held'), (x) => x);
      assert.ok(e instanceof RateLimitError, String(e));
      assert.equal(e.code, 'rate_limit_exceeded');
      const retryAfter = Number(e.headers.get('retry-after'));
      const retryAfterMs = Number(e.headers.get('retry-after-ms'));
      assert.ok(retryAfter >= 1, `Retry-After ${e.headers.get('retry-after')}`);
      assert.ok(retryAfterMs > 0 && retryAfterMs <= retryAfter * 1000, `retry-after-ms ${retryAfterMs}`);

      const attempts = [];
      const recording = async (url, init) => {
        const a = { start: Date.now() };
        attempts.push(a);
        const r = await fetch(url, init);
        Object.assign(a, { end: Date.now(), status: r.status, retryAfterMs: Number(r.headers.get('retry-after-ms')) });
        return r;
      };
      const client = new OpenAI({ apiKey: keys.conc, baseURL: gw.baseURL, maxRetries: 2, fetch: recording, timeout: 10000 });
      const t0 = Date.now();
      const c = await client.chat.completions.create(body('mock-gpt'));
      const took = Date.now() - t0;
      assert.equal(c.usage.completion_tokens, MAX);
      const held = await hold;
      assert.equal(held.status, 200, held.text);
      assert.equal(attempts[0].status, 429, `attempts: ${JSON.stringify(attempts)}`);
      assert.equal(attempts.at(-1).status, 200, `attempts: ${JSON.stringify(attempts)}`);
      for (let i = 1; i < attempts.length; i++) {
        const waited = attempts[i].start - attempts[i - 1].end;
        const advertised = attempts[i - 1].retryAfterMs;
        assert.ok(waited >= advertised - 5, `retry ${i} after ${waited} ms, advertised ${advertised} ms`);
      }
      assert.ok(took >= retryAfterMs - 5, `the call took ${took} ms, less than the advertised ${retryAfterMs} ms`);
      assert.ok(holdDoneAt <= attempts.at(-1).start + 50, 'the retry succeeded once the held call had finished');

      // The SDK reads retry-after-ms before Retry-After, so the wait above proves only the former.
      // A client that never sees retry-after-ms (a proxy that drops it, another SDK) has only
      // Retry-After: with it stripped, the SDK must still wait whole advertised seconds (its own
      // backoff for a first retry is at most 0.5 s, so a shorter wait would show it ignored).
      const hold2 = (await holdSlot(keys.conc)).done;
      const seen = [];
      const onlyRetryAfter = async (url, init) => {
        const a = { start: Date.now() };
        seen.push(a);
        const r = await fetch(url, init);
        const h = new Headers(r.headers);
        h.delete('retry-after-ms');
        Object.assign(a, { end: Date.now(), status: r.status, retryAfter: h.get('retry-after') });
        return new Response(r.body, { status: r.status, statusText: r.statusText, headers: h });
      };
      const secondsOnly = new OpenAI({ apiKey: keys.conc, baseURL: gw.baseURL, maxRetries: 2, fetch: onlyRetryAfter, timeout: 10000 });
      const c2 = await secondsOnly.chat.completions.create(body('mock-gpt'));
      assert.equal(c2.usage.completion_tokens, MAX);
      assert.equal((await hold2).status, 200);
      assert.equal(seen[0].status, 429, `attempts: ${JSON.stringify(seen)}`);
      assert.equal(seen.at(-1).status, 200, `attempts: ${JSON.stringify(seen)}`);
      for (let i = 1; i < seen.length; i++) {
        const advertised = Number(seen[i - 1].retryAfter) * 1000;
        assert.ok(advertised >= 1000, `Retry-After ${seen[i - 1].retryAfter}`);
        const waited = seen[i].start - seen[i - 1].end;
        assert.ok(waited >= advertised - 5, `retry ${i} after ${waited} ms, Retry-After ${seen[i - 1].retryAfter} s`);
      }
    });

    test('keys: create → use → revoke → 401; admin auth; static expired/disabled; model grants; /v1/models', { timeout: 20000 }, async () => {
      // Admin API authentication.
      const create = {
        team: 'search',
        name: 'ci',
        models: ['mock-*'],
        limits: { rpm: 5 },
        budget: { usd: 0.5, period: 'daily', soft: 0.8 },
        expires_unix: 0,
      };
      for (const tok of [undefined, 'wrong-token', adm.token.slice(0, -1)]) {
        const r = await admin(gw, tok, 'POST', '/admin/v1/keys', create);
        assertOpenAIError(r, { status: 401, code: 'invalid_api_key' });
        assert.ok(!('key' in r.json));
        assertOpenAIError(await admin(gw, tok, 'GET', '/admin/v1/budget?team=search'), { status: 401 });
        assertOpenAIError(await admin(gw, tok, 'DELETE', '/admin/v1/keys/whatever'), { status: 401 });
      }
      const unknownTeam = await admin(gw, adm.token, 'POST', '/admin/v1/keys', { ...create, team: 'nosuchteam' });
      assertOpenAIError(unknownTeam, { status: 400, param: 'team' });

      const k = await createKey(gw, adm.token, create);
      const { id, secret } = splitKey(k.key);
      assert.equal(k.id, id);
      assert.equal(k.team, 'search');
      assert.equal(k.name, 'ci');
      assert.deepEqual(k.models, ['mock-*']);
      assert.equal(k.enabled, true);
      assert.equal(k.limits.rpm, 5);
      assert.equal(k.budget.usd, 0.5);
      assert.ok(!('digest' in k), 'no digest in the create response');

      // The admin API exists only on the admin listener.
      const adminPaths = [
        ['POST', '/admin/v1/keys'],
        ['GET', `/admin/v1/keys/${id}`],
        ['DELETE', `/admin/v1/keys/${id}`],
        ['GET', '/admin/v1/budget?team=search'],
      ];
      for (const [method, path] of adminPaths) {
        const r = await fetchT(`${gw.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${adm.token}`, 'content-type': 'application/json' },
          body: method === 'POST' ? JSON.stringify(create) : undefined,
        });
        const text = await r.text();
        assert.equal(r.status, 404, `${method} ${path} on the caller listener: ${r.status} ${text}`);
      }

      // Use it, with each accepted header.
      for (const header of ['authorization', 'api-key', 'x-api-key']) {
        const r = await chat(gw, k.key, body('mock-gpt'), { header });
        assert.equal(r.status, 200, `${header}: ${r.text}`);
      }
      const rec = await admin(gw, adm.token, 'GET', `/admin/v1/keys/${id}`);
      assert.equal(rec.status, 200);
      assert.equal(rec.json.enabled, true);
      assert.ok(!('key' in rec.json) && !('digest' in rec.json), `record leaks: ${rec.text}`);
      assert.ok(!rec.text.includes(secret));
      const kb = await settledBudget(gw, adm.token, 'search', { key: id, pred: (x) => x.spent_nano === 3 * CALL_NANO });
      assert.equal(kb.limit_usd, 0.5);
      assert.equal(kb.key_id, id);

      // Model grants: the team allows mock-*; a key may narrow it further.
      assertOpenAIError(await chat(gw, k.key, body('other-gpt')), { status: 403, code: 'model_not_allowed', type: 'permission_denied' });
      assertOpenAIError(await chat(gw, keys.narrow, body('mock-slow')), { status: 403, code: 'model_not_allowed' });
      const one = await createKey(gw, adm.token, { team: 'search', models: ['mock-gpt'] });
      assertOpenAIError(await chat(gw, one.key, body('mock-slow')), { status: 403, code: 'model_not_allowed' });
      assert.equal((await chat(gw, one.key, body('mock-gpt'))).status, 200);

      // /v1/models lists what the caller may use; without a key it is 401.
      const models = async (key) => {
        const r = await fetchT(`${gw.baseURL}/models`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
        const j = await r.json();
        return { status: r.status, j, ids: r.status === 200 ? j.data.map((m) => m.id).sort() : undefined };
      };
      assert.deepEqual((await models(k.key)).ids, ['mock-gpt', 'mock-hold', 'mock-long', 'mock-paced', 'mock-slow']);
      assert.deepEqual((await models(one.key)).ids, ['mock-gpt']);
      assert.deepEqual((await models(keys.narrow)).ids, ['mock-gpt']);
      assert.ok((await models(keys.free)).ids.includes('other-gpt'));
      const none = await models(undefined);
      assert.equal(none.status, 401);
      assert.equal(none.j.error.code, 'invalid_api_key');
      // One model: what the list has, and 404 alike for a model out of the grant and one that does not exist.
      const one_model = async (key, id) => {
        const r = await fetchT(`${gw.baseURL}/models/${encodeURIComponent(id)}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
        return { status: r.status, j: await r.json() };
      };
      assert.deepEqual(await one_model(one.key, 'mock-gpt'), { status: 200, j: (await models(one.key)).j.data[0] });
      const hidden = await one_model(one.key, 'mock-slow');
      const absent = await one_model(one.key, 'no-such-model');
      assert.equal(hidden.status, 404);
      assert.equal(hidden.j.error.code, 'model_not_found');
      assert.deepEqual(absent.j.error, { ...hidden.j.error, message: hidden.j.error.message.replace('mock-slow', 'no-such-model') });
      assert.equal((await one_model(keys.free, 'other-gpt')).status, 200);
      assert.equal((await one_model(undefined, 'mock-gpt')).j.error.code, 'invalid_api_key');

      // Revoke, then the very next call is refused.
      const del = await admin(gw, adm.token, 'DELETE', `/admin/v1/keys/${id}`);
      assert.equal(del.status, 200, del.text);
      assert.equal(del.json.enabled, false);
      assert.ok(!del.text.includes(secret) && !('digest' in del.json));
      const after = await chat(gw, k.key, body('mock-gpt'));
      const err = assertOpenAIError(after, { status: 401, code: 'invalid_api_key', type: 'invalid_request_error' });
      assert.match(err.message, /revoked/i);
      assert.equal((await admin(gw, adm.token, 'GET', `/admin/v1/keys/${id}`)).json.enabled, false);
      assertOpenAIError(await admin(gw, adm.token, 'DELETE', '/admin/v1/keys/nosuchid'), { status: 404 });

      // Static keys: expired and disabled.
      const expiredErr = assertOpenAIError(await chat(gw, expired.full, body('mock-gpt')), { status: 401, code: 'invalid_api_key' });
      assert.match(expiredErr.message, /expired/i);
      const disabledErr = assertOpenAIError(await chat(gw, disabled.full, body('mock-gpt')), { status: 401, code: 'invalid_api_key' });
      assert.match(disabledErr.message, /revoked/i);
      // Missing, malformed, unknown, wrong secret.
      for (const bad of [undefined, 'tg_abc', `tg_${id}_${randomAlnum(43)}`, `tg_${randomAlnum(12)}_${randomAlnum(43)}`, `${one.key}x!`]) {
        assertOpenAIError(await chat(gw, bad, body('mock-gpt')), { status: 401, code: 'invalid_api_key', type: 'invalid_request_error' });
      }
    });

    test('x-ratelimit-* headers: the tightest scope per kind on every admitted and refused call (OpenAI SDK)', { timeout: 20000 }, async () => {
      const sdk = new OpenAI({ apiKey: keys.hdrs, baseURL: gw.baseURL, maxRetries: 0, timeout: 10000 });
      const perCall = PROMPT_EST + MAX;  // tokens reserved per call
      const reset = /^(\d+(\.\d+)?s|1m\d+(\.\d+)?s)$/;  // the window (60 s) plus at most one bucket (2 s)
      for (let i = 1; i <= 2; i++) {
        const { response } = await sdk.chat.completions.create(body('mock-gpt')).withResponse();
        const h = response.headers;
        // Requests: the key's own limit (2) is tighter than the team's (5).
        assert.equal(h.get('x-ratelimit-limit-requests'), '2');
        assert.equal(h.get('x-ratelimit-remaining-requests'), String(2 - i));
        // Tokens: only the team limits them.
        assert.equal(h.get('x-ratelimit-limit-tokens'), '100');
        assert.equal(h.get('x-ratelimit-remaining-tokens'), String(100 - i * perCall));
        assert.match(h.get('x-ratelimit-reset-requests'), reset);
        assert.equal(h.get('x-ratelimit-reset-tokens'), h.get('x-ratelimit-reset-requests'));
      }
      const e = await sdk.chat.completions.create(body('mock-gpt')).then(
        () => assert.fail('expected 429 once the key has made 2 calls'),
        (x) => x,
      );
      assert.ok(e instanceof RateLimitError, String(e));
      assert.equal(e.code, 'rate_limit_exceeded');
      assert.equal(e.headers.get('x-ratelimit-limit-requests'), '2');
      assert.equal(e.headers.get('x-ratelimit-remaining-requests'), '0');
      assert.equal(e.headers.get('x-ratelimit-limit-tokens'), '100');
      assert.equal(e.headers.get('x-ratelimit-remaining-tokens'), String(100 - 2 * perCall));
      assert.match(e.headers.get('x-ratelimit-reset-requests') ?? '', reset);
      assert.match(e.headers.get('x-ratelimit-reset-tokens') ?? '', reset);
      assert.ok(Number(e.headers.get('retry-after')) >= 1);
      // A team without limits gets none (nothing to report).
      const free = await chat(gw, keys.free, body('mock-gpt'));
      assert.equal(free.status, 200);
      assert.equal(free.headers.get('x-ratelimit-limit-requests'), null);
    });

    test('x-ratelimit-* headers on concurrency and budget 429s too; a refused call takes nothing', { timeout: 20000 }, async () => {
      const perCall = PROMPT_EST + MAX;
      const figures = (h) => [
        h.get('x-ratelimit-limit-requests'),
        h.get('x-ratelimit-remaining-requests'),
        h.get('x-ratelimit-limit-tokens'),
        h.get('x-ratelimit-remaining-tokens'),
      ];
      const hold = (await holdSlot(keys.hdrq)).done;
      // The only slot is held (the budget would still admit one more call): a concurrency 429.
      const busy = await chat(gw, keys.hdrq, body('mock-gpt'));
      assertOpenAIError(busy, { status: 429, code: 'rate_limit_exceeded' });
      assert.deepEqual(figures(busy.headers), ['100', '99', '100000', String(100000 - perCall)]);
      assert.ok(Number(busy.headers.get('retry-after')) >= 1);
      assert.equal((await hold).status, 200);
      await settledBudget(gw, adm.token, 'hdrq', { pred: (b) => b.spent_nano === CALL_NANO });
      // The refused call took no request and no tokens: the next one sees one call's worth used.
      const ok = await chat(gw, keys.hdrq, body('mock-gpt'));
      assert.equal(ok.status, 200, ok.text);
      assert.deepEqual(figures(ok.headers), ['100', '98', '100000', String(100000 - 2 * perCall)]);
      await settledBudget(gw, adm.token, 'hdrq', { pred: (b) => b.spent_nano === 2 * CALL_NANO });
      // The budget is spent: a budget 429, with the same figures (it took nothing either).
      const broke = await chat(gw, keys.hdrq, body('mock-gpt'));
      assertOpenAIError(broke, { status: 429, code: 'budget_exceeded', type: 'insufficient_quota' });
      assert.deepEqual(figures(broke.headers), ['100', '98', '100000', String(100000 - 2 * perCall)]);
      assert.match(broke.headers.get('x-ratelimit-reset-requests') ?? '', /^(\d+(\.\d+)?(ms|s)|1m\d+(\.\d+)?s)$/);
    });

    test('a key\'s own concurrency and TPM limits hold in a team that has none', { timeout: 20000 }, async () => {
      const perCall = PROMPT_EST + MAX;
      const applied = async () => metricValue(await scrape(gw), 'tollgate_policy_settlements_total', { result: 'applied' });
      const appliedBefore = await applied();
      const hold = (await holdSlot(keys.kown)).done;
      const busy = await chat(gw, keys.kown, body('mock-gpt'));
      const e = assertOpenAIError(busy, { status: 429, code: 'rate_limit_exceeded' });
      assert.match(e.message, /in flight on key/);
      // Another key of the same team is not held back by it.
      assert.equal((await chat(gw, keys.free, body('mock-gpt'))).status, 200);
      assert.equal((await hold).status, 200);
      // The slot is released by the held call's settlement, which runs just after its response
      // (the other team's call has nothing to settle: neither its team nor its key has limits).
      await eventually(async () => (await applied()) > appliedBefore, { timeoutMs: 5000, intervalMs: 10, what: 'the held call settled' });
      const second = await chat(gw, keys.kown, body('mock-gpt'));
      assert.equal(second.status, 200, second.text);
      assert.equal(second.headers.get('x-ratelimit-limit-tokens'), String(2 * perCall));
      assert.equal(second.headers.get('x-ratelimit-remaining-tokens'), '0');
      const third = await chat(gw, keys.kown, body('mock-gpt'));
      const t = assertOpenAIError(third, { status: 429, code: 'rate_limit_exceeded' });
      assert.match(t.message, /token.* on key/i);
    });

    test('no max_tokens: TPM and budget reserve store.default_max_tokens (4096), then settle to the usage', { timeout: 20000 }, async () => {
      const cap = 4096;
      const noMax = body('mock-gpt');
      delete noMax.max_tokens;
      const first = await chat(gw, keys.capd, noMax);
      assert.equal(first.status, 200, first.text);
      assert.equal(first.headers.get('x-ratelimit-limit-tokens'), '10000');
      // Reserved at admission: the prompt estimate plus the configured cap.
      assert.equal(first.headers.get('x-ratelimit-remaining-tokens'), String(10000 - (PROMPT_EST + cap)));
      const used = first.json.usage.completion_tokens;
      assert.ok(used > 0 && used < cap, `the mock generated ${used} tokens`);
      // Settled to the usage: the budget charges what was used, not the reservation...
      const b = await settledBudget(gw, adm.token, 'capd', { pred: (x) => x.spent_nano > 0 });
      assert.equal(b.spent_nano, nanoOf(PROMPT_EST, used));
      // ...and the token window keeps only the used tokens of the first call.
      const second = await chat(gw, keys.capd, body('mock-gpt'));
      assert.equal(second.status, 200, second.text);
      assert.equal(second.headers.get('x-ratelimit-remaining-tokens'), String(10000 - (PROMPT_EST + used) - (PROMPT_EST + MAX)));
    });

    test('no max_tokens: the reserved cap is sent upstream for calls that count against a token limit or a budget, and only for them', { timeout: 20000 }, async () => {
      const sent = async (key, tag, extra = {}) => {
        const req = { model: 'fake-nousage', messages: [{ role: 'user', content: `cap ${tag} ${kind}` }], ...extra };
        const r = await chat(gw, key, req);
        assert.equal(r.status, 200, r.text);
        return (await fake.waitForRequest((q) => q.body?.messages?.[0]?.content === `cap ${tag} ${kind}`)).body;
      };
      // Team capd has a TPM limit and a budget: the model is held to the 4,096 tokens reserved
      // (as max_tokens to this local-style upstream; OpenAI itself gets max_completion_tokens).
      const capped = await sent(keys.capd, 'capd');
      assert.equal(capped.max_tokens, 4096);
      assert.ok(!('max_completion_tokens' in capped));
      // The stream team has only a budget: capped too.
      assert.equal((await sent(keys.stream, 'stream')).max_tokens, 4096);
      // The caller's own limit goes as the caller sent it, under its own name.
      const own = await sent(keys.capd, 'own', { max_completion_tokens: 7 });
      assert.equal(own.max_completion_tokens, 7);
      assert.ok(!('max_tokens' in own));
      // Team free counts nothing against tokens or money: the call goes as sent.
      assert.ok(!('max_tokens' in (await sent(keys.free, 'free'))));
    });

    test('teams are accounted separately: one team’s RPM and spend do not count against another’s', { timeout: 20000 }, async () => {
      const call = async (key) => {
        const r = await chat(gw, key, body('mock-gpt'));
        return r.status === 200 ? 200 : `${r.status} ${r.json?.error?.code}: ${r.json?.error?.message}`;
      };
      // Neither team has made a call yet (other teams have).
      for (const team of ['sepa', 'sepb']) {
        const fresh = await budget(gw, adm.token, team);
        assert.equal(fresh.spent_nano, 0, `team ${team} has spent nothing yet, but the store reports ${JSON.stringify(fresh)}`);
      }
      const statusesA = [];
      for (let i = 0; i < 4; i++) statusesA.push(await call(keys.sepa));
      assert.deepEqual(statusesA.slice(0, 3), [200, 200, 200], `team sepa, rpm 3: ${JSON.stringify(statusesA)}`);
      assert.match(String(statusesA[3]), /^429 rate_limit_exceeded/);
      const a = await settledBudget(gw, adm.token, 'sepa', { pred: (x) => x.spent_nano > 0 });
      assert.equal(a.spent_nano, 3 * CALL_NANO, `team sepa spent: ${JSON.stringify(a)}`);
      const b0 = await budget(gw, adm.token, 'sepb');
      assert.equal(b0.spent_nano, 0, `team sepb has spent nothing yet, but the store reports ${JSON.stringify(b0)}`);
      const statusesB = [];
      for (let i = 0; i < 4; i++) statusesB.push(await call(keys.sepb));
      assert.deepEqual(statusesB.slice(0, 3), [200, 200, 200], `team sepb has its own rpm 3: ${JSON.stringify(statusesB)}`);
      assert.match(String(statusesB[3]), /^429 rate_limit_exceeded/);
      const b = await settledBudget(gw, adm.token, 'sepb', { pred: (x) => x.spent_nano > 0 });
      assert.equal(b.spent_nano, 3 * CALL_NANO);
    });
  });
}

// ---------------------------------------------------------------------------------------------

describe('admin API without admin tokens', () => {
  test('answers 403 (disabled), even with a bearer token', { timeout: 15000 }, async () => {
    const gw = await startGateway(serverYaml({ openAuth: false, freePrices: false }) + prices() + mockModels());
    try {
      for (const headers of [{}, { authorization: 'Bearer anything' }]) {
        const r = await httpRequest(`${gw.adminUrl}/admin/v1/keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ team: 'x' }),
        });
        assert.equal(r.status, 403, r.text);
        assert.equal(r.json?.error?.type, 'permission_denied', r.text);
        assert.equal(r.json?.error?.code, 'admin_api_disabled', r.text);
      }
      await gw.stopClean();
    } finally {
      await gw.kill();
    }
  });
});

describe('Redis outage', () => {
  const outageName =
    'Redis stopped under load: budget team 503, rpm-only team local rpm/replicas, degraded 1; ' +
    'restarted: enforced by Redis again without a gateway restart';
  test(outageName, { timeout: 40000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const kb = staticKey('budgeted1');
    const kr = staticKey('ratey1');
    let gw;
    const load = { on: true, results: [] };
    let loadDone;
    try {
      gw = await startGateway(
        serverYaml({ workers: 1, openAuth: false, freePrices: false }) +
          `auth:
  admin_tokens:
${adm.yaml}${prices()}${storeYaml('redis', redis, '  replicas: 2\n')}teams:
  - name: budgeted
    budget: {usd: 100, period: daily, soft: 0}
  - name: ratey
    limits: {rpm: 10}
keys:
  - {id: ${kb.id}, team: budgeted, digest: "${kb.digest}"}
  - {id: ${kr.id}, team: ratey, digest: "${kr.digest}"}
` +
          mockModels(),
      );
      await waitStoreUp(gw, adm.token, { rounds: 2 });
      const pid = gw.pid;
      const decisions = async (d) => metricValue(await scrape(gw), 'tollgate_policy_decisions_total', { decision: d });
      const degraded = async () => metricValue(await scrape(gw), 'tollgate_policy_store_degraded');

      // Up: both teams served through Redis.
      assert.equal((await chat(gw, kb.full, body('mock-gpt'))).status, 200);
      assert.equal((await chat(gw, kr.full, body('mock-gpt'))).status, 200);
      assert.equal(await degraded(), 0);

      // Background load from the budgeted team while Redis goes away.
      loadDone = (async () => {
        while (load.on) {
          const batch = await settleAll(Array.from({ length: 4 }, () => chat(gw, kb.full, body('mock-slow'), { timeoutMs: 10000 })));
          load.results.push(...batch);
        }
      })();
      await eventually(() => load.results.length >= 4, { timeoutMs: 5000, what: 'load running' });
      await redis.stop();

      // Budgeted team: fail closed.
      const closed = await eventually(
        async () => {
          const r = await chat(gw, kb.full, body('mock-gpt'), { timeoutMs: 5000 });
          return r.status === 503 ? r : undefined;
        },
        { timeoutMs: 5000, intervalMs: 20, what: '503 for the budgeted team' },
      );
      assertOpenAIError(closed, { status: 503, code: 'policy_store_unavailable' });
      assert.equal(closed.headers.get('retry-after'), '1');
      assert.equal(await degraded(), 1);
      // The background load meets the outage too.
      await eventually(() => load.results.some((r) => r.status === 503), { timeoutMs: 5000, what: 'a 503 in the load' });

      // Rate-limited team without a budget: local limit rpm / replicas = 5, then 429.
      const localBefore = await decisions('local');
      const statuses = [];
      for (let i = 0; i < 7; i++) {
        const r = await chat(gw, kr.full, body('mock-gpt'), { timeoutMs: 5000 });
        statuses.push(r.status);
        if (r.status === 429) assertOpenAIError(r, { code: 'rate_limit_exceeded' });
        // The figures sent are this replica's share (docs/policy.md), on 200s and 429s alike.
        assert.equal(r.headers.get('x-ratelimit-limit-requests'), '5', `call ${i}`);
        assert.equal(r.headers.get('x-ratelimit-remaining-requests'), String(Math.max(0, 4 - i)), `call ${i}`);
      }
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429], `local limit 10/2: ${statuses}`);
      assert.equal((await decisions('local')) - localBefore, 5);
      assert.equal(await degraded(), 1);

      load.on = false;
      await loadDone;
      const loadStatuses = tally(load.results.map((r) => r.status));
      for (const s of Object.keys(loadStatuses)) assert.ok(s === '200' || s === '503', `load statuses ${JSON.stringify(loadStatuses)}`);
      assert.ok(loadStatuses['200'] > 0 && loadStatuses['503'] > 0, `load statuses ${JSON.stringify(loadStatuses)}`);

      // Back: a fresh (empty) Redis on the same port. No gateway restart.
      await redis.restart();
      const t0 = Date.now();
      await eventually(async () => (await chat(gw, kb.full, body('mock-gpt'), { timeoutMs: 5000 })).status === 200, {
        timeoutMs: 8000,
        intervalMs: 50,
        what: 'the budgeted team served again after Redis came back',
      });
      const recoveredMs = Date.now() - t0;
      assert.equal(await degraded(), 0);
      // The budget is kept in Redis again: the call served is charged there (the fresh Redis had
      // nothing; calls settled during the outage may add theirs).
      const charged = await settledBudget(gw, adm.token, 'budgeted', { pred: (x) => x.spent_nano > 0 });
      assert.ok(charged.spent_nano >= CALL_NANO, `budgeted after recovery: ${JSON.stringify(charged)}`);
      const keysNow = await redis.command('KEYS', 'tgtest:{budgeted}*');
      assert.ok(Array.isArray(keysNow) && keysNow.length > 0, `no Redis keys for team budgeted: ${JSON.stringify(keysNow)}`);
      // Enforced by Redis again: the global limit of 10 (a fresh window), not the local 5.
      const localAfter = await decisions('local');
      const again = [];
      for (let i = 0; i < 11; i++) again.push((await chat(gw, kr.full, body('mock-gpt'))).status);
      assert.deepEqual(again, [...Array(10).fill(200), 429], `after recovery (${recoveredMs} ms): ${again}`);
      assert.equal(await decisions('local'), localAfter, 'no more local decisions');
      // Each team's state lives in Redis under its {team} hash tag (docs/configuration.md).
      const stored = await redis.command('KEYS', 'tgtest:{ratey}*');
      assert.ok(Array.isArray(stored) && stored.length > 0, `no Redis keys for team ratey: ${JSON.stringify(stored)}`);
      assert.equal(gw.pid, pid);
      assert.ok(gw.alive, 'the gateway was not restarted');
      await gw.stopClean();
    } finally {
      load.on = false;
      await loadDone?.catch(() => {});
      await gw?.kill();
      await redis.close();
    }
  });
});

describe('Redis outage, two teams', () => {
  test('degraded mode: each team gets its own local limit (rpm / replicas), not a shared one', { timeout: 20000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const k1 = staticKey('localone');
    const k2 = staticKey('localtwo');
    let gw;
    try {
      gw = await startGateway(
        serverYaml({ workers: 1, openAuth: false, freePrices: false }) +
          `auth:
  admin_tokens:
${adm.yaml}${prices()}${storeYaml('redis', redis, '  replicas: 2\n')}teams:
  - {name: one, limits: {rpm: 4}}
  - {name: two, limits: {rpm: 4}}
keys:
  - {id: ${k1.id}, team: one, digest: "${k1.digest}"}
  - {id: ${k2.id}, team: two, digest: "${k2.digest}"}
` +
          mockModels(),
      );
      await waitStoreUp(gw, adm.token, { rounds: 2 });
      await redis.stop();
      const run = async (key) => {
        const out = [];
        for (let i = 0; i < 3; i++) out.push((await chat(gw, key, body('mock-gpt'), { timeoutMs: 5000 })).status);
        return out;
      };
      assert.deepEqual(await run(k1.full), [200, 200, 429], 'team one: local limit 4 / 2');
      assert.deepEqual(await run(k2.full), [200, 200, 429], 'team two: its own local limit 4 / 2, untouched by team one');
      await gw.stopClean();
    } finally {
      await gw?.kill();
      await redis.close();
    }
  });
});

/**
 * A one-worker gateway whose store is at `redisAddress.address` (a Redis, or a relay before one),
 * with team `budgeted` (a daily budget and one concurrency slot) and `key`; once its store is up,
 * one call is served.
 */
async function startSlotGateway(redisAddress, adm, key) {
  const gw = await startGateway(
    serverYaml({ workers: 1, openAuth: false, freePrices: false }) +
      `auth:
  admin_tokens:
${adm.yaml}${prices()}${storeYaml('redis', redisAddress)}teams:
  - name: budgeted
    budget: {usd: 100, period: daily, soft: 0}
    limits: {concurrency: 1}
keys:
  - {id: ${key.id}, team: budgeted, digest: "${key.digest}"}
` +
      mockModels(),
  );
  await waitStoreUp(gw, adm.token, { rounds: 2 });
  assert.equal((await chat(gw, key.full, body('mock-gpt'))).status, 200);
  return gw;
}

describe('Redis hung', () => {
  test('Redis paused (SIGSTOP): calls with a budget fail fast with 503 (timeout_ms 50), not hang; resumed: served again, and the admission Redis ran late holds no slot or reservation', { timeout: 30000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const kb = staticKey('budgeted2');
    let gw;
    try {
      gw = await startSlotGateway(redis, adm, kb);
      // The first call's admission reaches Redis's socket and waits there; Redis runs it when it
      // resumes, after the gateway gave up on it (past its deadline: it reserves nothing).
      redis.pause();
      const timings = [];
      for (let i = 0; i < 5; i++) {
        const t = Date.now();
        const r = await chat(gw, kb.full, body('mock-gpt'), { timeoutMs: 5000 });
        timings.push(Date.now() - t);
        assertOpenAIError(r, { status: 503, code: 'policy_store_unavailable' });
      }
      // 50 ms command timeout, 200 ms connect timeout: never seconds.
      assert.ok(Math.max(...timings) < 1000, `503 answered after ${JSON.stringify(timings)} ms`);
      assert.equal(metricValue(await scrape(gw), 'tollgate_policy_store_degraded'), 1);
      redis.resume();
      await eventually(async () => (await chat(gw, kb.full, body('mock-gpt'), { timeoutMs: 5000 })).status === 200, {
        timeoutMs: 8000,
        intervalMs: 50,
        what: 'served again after Redis resumed',
      });
      assert.equal(metricValue(await scrape(gw), 'tollgate_policy_store_degraded'), 0);
      // Nothing held once the calls are settled: no stray reservation, and the one concurrency
      // slot is free call after call (a late admission would hold both until lease_ms, 5 minutes).
      await settledBudget(gw, adm.token, 'budgeted');
      for (let i = 0; i < 3; i++) assert.equal((await chat(gw, kb.full, body('mock-gpt'))).status, 200);
      await settledBudget(gw, adm.token, 'budgeted');
      await gw.stopClean();
    } finally {
      redis.resume();
      await gw?.kill();
      await redis.close();
    }
  });
});

describe('Redis answer lost', () => {
  test('an admission Redis ran whose answer was lost (a reset right after) is released: the one concurrency slot is free again within a second, not after the 5-minute lease', { timeout: 30000 }, async () => {
    const redis = await startRedis();
    const relay = await startRedisRelay(redis);
    const adm = adminToken();
    const kb = staticKey('budgeted3');
    let gw;
    try {
      gw = await startSlotGateway(relay, adm, kb);
      const before = await settledBudget(gw, adm.token, 'budgeted');
      // The next admission reaches Redis, which reserves the call's worst case and takes its one
      // slot; the answer never comes back.
      relay.loseNextAnswerTo('EVALSHA');
      relay.hold(); // the gateway's reconnection waits until Redis's state has been read below
      assertOpenAIError(await chat(gw, kb.full, body('mock-gpt'), { timeoutMs: 5000 }), {
        status: 503,
        code: 'policy_store_unavailable',
      });
      assert.equal(relay.lost, 1);
      const held = await redisCommand(redis.port, ['ZRANGE', 'tgtest:{budgeted}:l', '0', '-1']);
      assert.ok(held.some((m) => String(m).includes('|')), `Redis made the admission: ${JSON.stringify(held)}`);
      relay.open();
      // Released once the store answers again: served, and nothing stays reserved or charged.
      const t = Date.now();
      await eventually(async () => (await chat(gw, kb.full, body('mock-gpt'), { timeoutMs: 5000 })).status === 200, {
        timeoutMs: 5000,
        intervalMs: 50,
        what: 'the slot free again',
      });
      assert.ok(Date.now() - t < 3000, `served again after ${Date.now() - t} ms`);
      const m = await scrape(gw);
      // The lost one released. (A call of the polling above whose own admission timed out as the
      // connection came back, which a sanitizer build on a busy host has done, is in doubt too and
      // released as well: never more releases than admissions answered "unavailable".)
      const released = metricValue(m, 'tollgate_policy_settlements_total', { result: 'released' });
      const unavailable = metricValue(m, 'tollgate_policy_decisions_total', { decision: 'unavailable' });
      assert.ok(released >= 1 && released <= unavailable, `released ${released}, unavailable ${unavailable}`);
      const after = await settledBudget(gw, adm.token, 'budgeted');
      // The first call and the one served after the release, each charged; the lost one nothing.
      assert.equal(after.spent_nano, 2 * before.spent_nano, JSON.stringify({ before, after }));
      await gw.stopClean();
    } finally {
      await gw?.kill();
      await relay.close();
      await redis.close();
    }
  });
});

/** A one-worker gateway on `redis` (drain_ms 1000) with team `team`, a budget, and `key`; `storeExtra` adds store lines. */
function startBudgetGateway(redis, adm, key, team, storeExtra = '', fakeURL = undefined, timeoutMs = 50) {
  return startGateway(
    serverYaml({ workers: 1, openAuth: false, freePrices: false, timeouts: { drain_ms: 1000 } }) +
      `auth:
  admin_tokens:
${adm.yaml}${prices()}${storeYaml('redis', redis, storeExtra, { timeoutMs })}teams:
  - name: ${team}
    budget: {usd: 100, period: total, soft: 0}
keys:
  - {id: ${key.id}, team: ${team}, digest: "${key.digest}"}
` +
      mockModels(fakeURL),
  );
}

/** One call on `gw` that ends while `redis` is paused: its settlement is queued for retry. */
async function callDuringOutage(gw, redis, adm, key) {
  await waitStoreUp(gw, adm.token, { rounds: 2 });
  const admitted = async () => metricValue(await scrape(gw), 'tollgate_policy_decisions_total', { decision: 'admitted' });
  const before = await admitted();
  const call = chat(gw, key.full, body('mock-hold'));
  await eventually(async () => (await admitted()) > before, { timeoutMs: 3000, intervalMs: 10, what: 'the call admitted' });
  redis.pause();
  assert.equal((await call).status, 200);
  await eventually(
    async () => metricValue(await scrape(gw), 'tollgate_policy_settlements_total', { result: 'retried' }) >= 1,
    { timeoutMs: 5000, intervalMs: 20, what: 'the settlement queued for retry' },
  );
}

describe('shutdown while Redis is unreachable', () => {
  test('a settlement that could not reach Redis by the end of the drain is logged as lost, with its cost, and the exit code is 3', { timeout: 30000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const kb = staticKey('drained1');
    let gw;
    try {
      gw = await startBudgetGateway(redis, adm, kb, 'drained');
      await callDuringOutage(gw, redis, adm, kb);
      const exit = await gw.stop();
      // A stop that lost a charge is not a clean one: a supervisor or runbook can tell.
      assert.deepEqual(exit, { code: 3, signal: null }, gw.stderr());
      assert.match(gw.stderr(), /tollgate stopped, with records lost[^\n]*"settlements_lost":1/);
      const lost = gw.stderr().split('\n').filter((l) => l.includes('settlement lost at shutdown')).map((l) => JSON.parse(l));
      assert.equal(lost.length, 1, gw.stderr());
      assert.equal(lost[0].level, 'error');
      assert.equal(lost[0].team, 'drained');
      assert.equal(Math.round(lost[0].cost_usd * 1e9), CALL_NANO);
      assert.equal(lost[0].tokens, PROMPT_EST + MAX);
      assert.match(lost[0].lease, /\S/);
      assert.ok(!gw.stderr().includes('still in flight at shutdown'), gw.stderr());
    } finally {
      redis.resume();
      await gw?.kill();
      await redis.close();
    }
  });
});

describe('shutdown past the drain deadline', () => {
  test('calls still waiting on their provider when the drain ends are settled and logged before the exit', { timeout: 30000 }, async () => {
    // One call waits for its head (the mock answers after 30 s); one has its 200 head and waits
    // for the rest of its body (10 s away). drain_ms is 1 s: both are still waiting when it ends.
    const redis = await startRedis();
    const fake = await startFakeOpenAI({ slowChunkMs: 1000 });
    const adm = adminToken();
    const kb = staticKey('cutoff1');
    let gw;
    let check;
    try {
      // Redis gets a second: this test is about the drain, not a store timeout (sanitizer builds).
      gw = await startBudgetGateway(redis, adm, kb, 'cutoff', '', fake.baseURL, 1000);
      await waitStoreUp(gw, adm.token, { rounds: 2 });
      // (Their callers get no answer: the connections close at the drain's end.)
      const waiting = settleAll([chat(gw, kb.full, body('mock-long'), { timeoutMs: 20000 })]);
      const paid = settleAll([chat(gw, kb.full, body('fake-slowbody'), { timeoutMs: 20000 })]);
      await eventually(async () => metricValue(await scrape(gw), 'tollgate_policy_decisions_total', { decision: 'admitted' }) >= 2,
        { timeoutMs: 3000, intervalMs: 10, what: 'both calls admitted' });
      await eventually(() => fake.requestsFor('slow-body').length === 1, { timeoutMs: 3000, intervalMs: 10, what: 'the slow body begun' });
      await sleep(100);  // its head has reached the gateway
      const t0 = Date.now();
      const exit = await gw.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, gw.stderr());
      assert.ok(Date.now() - t0 < 5000, `exit took ${Date.now() - t0} ms`);
      for (const [r] of [await waiting, await paid]) assert.equal(r.status, 'network-error', JSON.stringify(r));
      // Each logged once, as cut at the shutdown.
      const lines = gw.accessLog();
      for (const model of ['mock-long', 'fake-slowbody']) {
        const mine = lines.filter((l) => l.model === model);
        assert.equal(mine.length, 1, `${model}: ${JSON.stringify(lines)}`);
      }
      assert.ok(!gw.stderr().includes('settlement lost'), gw.stderr());
      // Nothing is held any more; the paid answer is charged its reservation, the waiting call nothing.
      check = await startBudgetGateway(redis, adm, kb, 'cutoff', '', undefined, 1000);
      await waitStoreUp(check, adm.token, { rounds: 2 });
      const b = await budget(check, adm.token, 'cutoff');
      assert.equal(b.reserved_nano, 0, JSON.stringify(b));
      assert.equal(b.spent_nano, CALL_NANO, JSON.stringify(b));
      await check.stopClean();
    } finally {
      await gw?.kill();
      await check?.kill();
      await fake.close();
      await redis.close();
    }
  });
});

describe('shutdown past the drain deadline, in a moderation call', () => {
  test('a call whose answer waits on the moderation endpoint when the drain ends is settled and logged', { timeout: 30000 }, async () => {
    // The fake's moderation endpoint never answers an input with MODSLOW, and the echo model
    // answers the prompt's text: the answer's moderation waits (timeout_ms 20 s) past the drain.
    const redis = await startRedis();
    const fake = await startFakeOpenAI();
    const adm = adminToken();
    const kb = staticKey('modcut1');
    let gw;
    let check;
    const config = (fakeURL) =>
      serverYaml({ workers: 1, openAuth: false, freePrices: false, timeouts: { drain_ms: 500 } }) +
      `auth:
  admin_tokens:
${adm.yaml}${prices()}${storeYaml('redis', redis, '', { timeoutMs: 1000 })}teams:
  - name: modcut
    budget: {usd: 100, period: total, soft: 0}
keys:
  - {id: ${kb.id}, team: modcut, digest: "${kb.digest}"}
` + (fakeURL ? `content_filters:
  moderation: {provider: fake, prompts: false, timeout_ms: 20000}
` : '') + mockModels(fakeURL ?? fake.baseURL) + `  - {name: fake-echo, provider: fake, upstream_model: echo}
`;
    try {
      gw = await startGateway(config(fake.baseURL));
      await waitStoreUp(gw, adm.token, { rounds: 2 });
      const call = settleAll([chat(gw, kb.full, { model: 'fake-echo', max_tokens: 20, messages: [{ role: 'user', content: 'say MODSLOW' }] }, { timeoutMs: 20000 })]);
      await eventually(() => fake.requests.some((r) => r.path === '/v1/moderations'), { timeoutMs: 3000, intervalMs: 10, what: 'the answer sent to moderation' });
      const t0 = Date.now();
      assert.deepEqual(await gw.stop(), { code: 0, signal: null }, gw.stderr());
      assert.ok(Date.now() - t0 < 5000, `exit took ${Date.now() - t0} ms`);
      assert.equal((await call)[0].status, 'network-error');
      assert.equal(gw.accessLog().filter((l) => l.model === 'fake-echo').length, 1, JSON.stringify(gw.accessLog()));
      assert.ok(!gw.stderr().includes('settlement lost'), gw.stderr());
      // Its hold is back and the answer the provider generated is charged.
      check = await startGateway(config(undefined));
      await waitStoreUp(check, adm.token, { rounds: 2 });
      const b = await budget(check, adm.token, 'modcut');
      assert.equal(b.reserved_nano, 0, JSON.stringify(b));
      assert.ok(b.spent_nano > 0, JSON.stringify(b));
      await check.stopClean();
    } finally {
      await gw?.kill();
      await check?.kill();
      await fake.close();
      await redis.close();
    }
  });
});

describe('settlement journal', () => {
  test('settlements Redis did not take survive SIGTERM and kill -9: the next start replays them and each call is charged once', { timeout: 60000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const kb = staticKey('journal1');
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-journal-'));
    const gws = [];
    const start = (journal) =>
      startBudgetGateway(redis, adm, kb, 'journaled', `  settlement_journal: ${journal}\n`).then((g) => (gws.push(g), g));
    /** A new gateway on `journal` replays it once Redis is back: the budget shows `calls` charged. */
    const replay = async (journal, calls) => {
      redis.resume();
      const next = await start(journal);
      await next.waitForStderr(/settlement journal: replaying[^\n]*"settlements":1,/, 5000);
      const b = await settledBudget(next, adm.token, 'journaled', { pred: (x) => x.spent_nano >= calls * CALL_NANO, timeoutMs: 10000 });
      assert.equal(b.spent_nano, calls * CALL_NANO, JSON.stringify(b));
      await eventually(() => statSync(journal).size === 0, { timeoutMs: 5000, intervalMs: 20, what: `${journal} emptied` });
      assert.equal(metricValue(await scrape(next), 'tollgate_policy_settlement_journal_open'), 0);
      await next.stopClean();
    };
    try {
      // SIGTERM: the drain ends with Redis unreachable; the settlement is kept, not lost.
      const j1 = join(dir, 'one.journal');
      const g1 = await start(j1);
      await callDuringOutage(g1, redis, adm, kb);
      assert.ok(statSync(j1).size > 0, 'written when the first attempt failed');
      assert.equal(metricValue(await scrape(g1), 'tollgate_policy_settlement_journal_open'), 1);
      assert.deepEqual(await g1.stop(), { code: 0, signal: null }, g1.stderr());
      assert.match(g1.stderr(), /settlements kept in the journal for the next start[^\n]*"settlements":1,/);
      assert.ok(!g1.stderr().includes('settlement lost'), g1.stderr());
      await replay(j1, 1);

      // kill -9: nothing runs at exit; the journal was written when the first attempt failed.
      const j2 = join(dir, 'two.journal');
      const g2 = await start(j2);
      await callDuringOutage(g2, redis, adm, kb);
      g2.signal('SIGKILL');
      await g2.exited;
      assert.ok(statSync(j2).size > 0);
      await replay(j2, 2);

      // One journal per process: a second gateway on a journal in use does not start.
      const holder = await start(j2);
      await assert.rejects(start(j2), /another gateway holds it/);
      await holder.stopClean();
    } finally {
      redis.resume();
      for (const g of gws) await g.kill();
      await redis.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('budgets: fail_open during an outage', () => {
  test('calls admitted while Redis is away are charged to the budget once it is back, exactly; through SIGKILL with a journal', { timeout: 60000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const kb = staticKey('openbud1');
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-outage-'));
    const journal = join(dir, 'outage.journal');
    const extra = `  on_unavailable: {budgets: fail_open}\n  settlement_journal: ${journal}\n`;
    const gws = [];
    const start = () => startBudgetGateway(redis, adm, kb, 'opened', extra).then((g) => (gws.push(g), g));
    const m = async (gw, name, labels) => metricValue(await scrape(gw), name, labels);
    /** The team's budget once `pred` holds and nothing is reserved: the admission that was on the
     *  wire when Redis stopped runs when it resumes, past its deadline, and reserves nothing. */
    const spent = (gw, pred) => settledBudget(gw, adm.token, 'opened', { pred, timeoutMs: 10000 });
    /** `n` calls while Redis is paused: each served (local limits, budget unchecked) and held for a later charge. */
    const duringOutage = async (gw, n) => {
      const local0 = await m(gw, 'tollgate_policy_decisions_total', { decision: 'local' });
      const outage0 = await m(gw, 'tollgate_policy_settlements_total', { result: 'outage' });
      for (let i = 0; i < n; i++) assert.equal((await chat(gw, kb.full, body('mock-gpt'), { timeoutMs: 5000 })).status, 200);
      assert.equal((await m(gw, 'tollgate_policy_decisions_total', { decision: 'local' })) - local0, n);
      await eventually(async () => (await m(gw, 'tollgate_policy_settlements_total', { result: 'outage' })) - outage0 === n, {
        timeoutMs: 3000,
        what: `${n} calls held for a later charge`,
      });
      assert.equal(await m(gw, 'tollgate_policy_store_degraded'), 1);
    };
    try {
      const g1 = await start();
      await waitStoreUp(g1, adm.token, { rounds: 2 });
      assert.equal((await chat(g1, kb.full, body('mock-gpt'))).status, 200);
      await settledBudget(g1, adm.token, 'opened', { pred: (b) => b.spent_nano === CALL_NANO });

      // Away, then back: the 4 calls' cost arrives once, and no more follows.
      redis.pause();
      await duringOutage(g1, 4);
      redis.resume();
      const b1 = await spent(g1, (b) => b.spent_nano >= 5 * CALL_NANO);
      assert.equal(b1.spent_nano, 5 * CALL_NANO, JSON.stringify(b1));
      await sleep(300);
      assert.equal((await budget(g1, adm.token, 'opened')).spent_nano, 5 * CALL_NANO, 'charged once');
      // Enforced by Redis again.
      assert.equal((await chat(g1, kb.full, body('mock-gpt'))).status, 200);
      assert.equal(await m(g1, 'tollgate_policy_store_degraded'), 0);
      await spent(g1, (b) => b.spent_nano === 6 * CALL_NANO);

      // Away again, and the gateway is killed once the charge is sealed into the journal: the
      // next start sends it.
      redis.pause();
      await duringOutage(g1, 3);
      await eventually(async () => (await m(g1, 'tollgate_policy_settlement_journal_open')) >= 1, {
        timeoutMs: 5000,
        intervalMs: 20,
        what: 'the charge in the journal',
      });
      g1.signal('SIGKILL');
      await g1.exited;
      redis.resume();
      const g2 = await start();
      await g2.waitForStderr(/settlement journal: replaying/, 5000);
      const b2 = await spent(g2, (b) => b.spent_nano >= 9 * CALL_NANO);
      assert.equal(b2.spent_nano, 9 * CALL_NANO, JSON.stringify(b2));
      await eventually(() => statSync(journal).size === 0, { timeoutMs: 5000, intervalMs: 20, what: 'journal emptied' });
      await g2.stopClean();
    } finally {
      redis.resume();
      for (const g of gws) await g.kill();
      await redis.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Redis with AUTH', () => {
  test('store.redis.username and password reach Redis (its connections run as that ACL user); a wrong password is a 503, never logged', { timeout: 30000 }, async () => {
    const password = `pw${randomAlnum(24)}`;
    const wrong = `pw${randomAlnum(24)}`;
    const redis = await startRedis({ extraArgs: ['--user', 'tg', 'on', `>${password}`, '~*', '&*', '+@all'] });
    const adm = adminToken();
    const kb = staticKey('authed1');
    const gws = [];
    const start = (pw) =>
      startGateway(
        serverYaml({ workers: 1, openAuth: false, freePrices: false }) +
          `auth:
  admin_tokens:
${adm.yaml}${prices()}store:
  type: redis
  redis: {address: "${redis.address}", username: tg, password: "${pw}", key_prefix: "tgauth:", timeout_ms: 200, connect_timeout_ms: 200}
teams:
  - name: authed
    budget: {usd: 100, period: daily, soft: 0}
keys:
  - {id: ${kb.id}, team: authed, digest: "${kb.digest}"}
` +
          mockModels(),
      );
    try {
      const good = await start(password);
      gws.push(good);
      await waitStoreUp(good, adm.token, { rounds: 2 });
      assert.equal((await chat(good, kb.full, body('mock-gpt'))).status, 200);
      const b = await settledBudget(good, adm.token, 'authed', { pred: (x) => x.spent_nano === CALL_NANO });
      assert.equal(b.spent_nano, CALL_NANO);
      const clients = String(await redis.command('CLIENT', 'LIST'));
      assert.match(clients, /\buser=tg\b/, clients);

      const bad = await start(wrong);
      gws.push(bad);
      const r = await chat(bad, kb.full, body('mock-gpt'), { timeoutMs: 5000 });
      assertOpenAIError(r, { status: 503, code: 'policy_store_unavailable' });
      // The first call may come before the first handshake has failed: degraded without a reason;
      // the reason (Redis's own words, no password in them) follows on a later call.
      const reason = /policy store unreachable[^\n]*"reason":"AUTH refused by Redis: WRONGPASS invalid username-password pair/;
      for (let i = 0; i < 20 && !reason.test(bad.stderr()); i++) {
        assertOpenAIError(await chat(bad, kb.full, body('mock-gpt'), { timeoutMs: 5000 }), { status: 503, code: 'policy_store_unavailable' });
        await new Promise((res) => setTimeout(res, 50));
      }
      assert.match(bad.stderr(), reason);
      for (const g of gws) {
        for (const [where, text] of [['stdout', g.stdout()], ['stderr', g.stderr()]]) {
          assert.ok(!text.includes(password) && !text.includes(wrong), `a Redis password appears in ${where}`);
        }
      }
    } finally {
      for (const g of gws) await g.kill();
      await redis.close();
    }
  });
});

describe('gateway killed holding reservations', () => {
  test('kill -9 holding reservations: a peer sees them, they expire after lease_ms, the budget admits again', { timeout: 30000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const k = staticKey('holder1');
    const LEASE_MS = 2000;
    const HELD = 3;
    const yaml =
      serverYaml({ workers: 2, openAuth: false, freePrices: false }) +
      `auth:
  admin_tokens:
${adm.yaml}${prices()}${storeYaml('redis', redis, `  lease_ms: ${LEASE_MS}\n`)}teams:
  - name: held
    budget: {usd: ${usd(HELD * CALL_NANO)}, period: daily, soft: 0}
keys:
  - {id: ${k.id}, team: held, digest: "${k.digest}"}
` +
      mockModels();
    let a;
    let b;
    try {
      a = await startGateway(yaml);
      b = await startGateway(yaml);
      await waitStoreUp(a, adm.token);
      await waitStoreUp(b, adm.token);

      const sentAt = Date.now();
      const inflight = settleAll(Array.from({ length: HELD }, () => chat(a, k.full, body('mock-long'), { timeoutMs: 20000 })));
      const seen = await eventually(
        async () => {
          const x = await budget(b, adm.token, 'held');
          return x.reserved_nano === HELD * CALL_NANO ? x : undefined;
        },
        { timeoutMs: 5000, intervalMs: 20, what: 'the reservations visible through the peer' },
      );
      assert.equal(seen.spent_nano, 0);
      // The budget is fully reserved: the peer refuses.
      assertOpenAIError(await chat(b, k.full, body('mock-gpt')), { status: 429, code: 'budget_exceeded' });

      const killedAt = Date.now();
      a.signal('SIGKILL');
      const exit = await a.exited;
      assert.equal(exit.signal, 'SIGKILL');
      const cut = await inflight;
      assert.ok(cut.every((r) => r.status === 'network-error'), 'the dead gateway’s callers lost their connections');

      const freed = await eventually(
        async () => {
          const x = await budget(b, adm.token, 'held');
          return x.reserved_nano === 0 ? { x, at: Date.now() } : undefined;
        },
        { timeoutMs: LEASE_MS + 5000, intervalMs: 25, what: 'reservations released by lease expiry' },
      );
      assert.ok(freed.at - sentAt >= LEASE_MS - 50, `released after ${freed.at - sentAt} ms, before the lease of ${LEASE_MS} ms`);
      // Within one lease of the kill (a renewal just before it restarts the lease at most once),
      // plus the 25 ms poll and the read's own time.
      assert.ok(freed.at - killedAt <= LEASE_MS + 1000, `released ${freed.at - killedAt} ms after the kill, lease ${LEASE_MS} ms`);
      assert.equal(freed.x.spent_nano, 0, 'nothing was charged for calls that never completed');

      // Whole again: the peer admits as many calls at once as the dead gateway held.
      const again = await Promise.all(Array.from({ length: HELD }, () => chat(b, k.full, body('mock-gpt'))));
      assert.deepEqual(again.map((r) => r.status), Array(HELD).fill(200), again.map((r) => r.text).join('\n'));
      const after = await settledBudget(b, adm.token, 'held', { pred: (x) => x.spent_nano === HELD * CALL_NANO && x.reserved_nano === 0 });
      assert.equal(after.spent_nano, HELD * CALL_NANO);
      await b.stopClean();
    } finally {
      await a?.kill();
      await b?.kill();
      await redis.close();
    }
  });
});

describe('one Redis round trip per admission', () => {
  test('Redis MONITOR sees one EVALSHA per admitted call from the gateway, and no other command', { timeout: 30000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const st = staticKey('trip1');
    let gw, monitor;
    try {
      gw = await startGateway(
        serverYaml({ workers: 1, openAuth: false, freePrices: false }) +
          `auth:
  key_cache_ms: 60000
  admin_tokens:
${adm.yaml}${prices()}${storeYaml('redis', redis)}teams:
  - name: trips
    limits: {rpm: 1000, tpm: 1000000, concurrency: 10}
    budget: {usd: 100, period: daily}
keys:
  - {id: ${st.id}, team: trips, digest: "${st.digest}"}
` +
          mockModels(),
      );
      await waitStoreUp(gw, adm.token);
      const metrics = async () => {
        const m = await scrape(gw);
        const calls = (op) => metricValue(m, 'tollgate_policy_store_calls_total', { op });
        return { admit: calls('admit'), settle: calls('settle'), lookup: calls('key_lookup'),
          applied: metricValue(m, 'tollgate_policy_settlements_total', { result: 'applied' }) };
      };
      // The first call looks the key up (a trip of its own, counted as key_lookup); later calls
      // use the cache, so what follows is admissions and settlements only.
      assert.equal((await chat(gw, st.full, body('mock-gpt'))).status, 200);
      await eventually(async () => (await metrics()).applied === 1, { timeoutMs: 5000, intervalMs: 20, what: 'the first settlement' });

      // MONITOR shows every command with its source: a client's address, or "lua" for commands a
      // script ran. Reading only metrics meanwhile keeps the test's own commands out of it.
      let seen = '';
      monitor = net.connect({ port: redis.port, host: '127.0.0.1' });
      monitor.setEncoding('latin1').on('data', (d) => (seen += d));
      monitor.write('*1\r\n$7\r\nMONITOR\r\n');
      await eventually(() => seen.startsWith('+OK'), { timeoutMs: 2000, intervalMs: 5, what: 'MONITOR started' });
      const before = await metrics();
      const N = 25;
      for (let i = 0; i < N; i++) assert.equal((await chat(gw, st.full, body('mock-gpt'))).status, 200);
      await eventually(async () => (await metrics()).applied === before.applied + N, { timeoutMs: 5000, intervalMs: 20, what: 'the calls settled' });
      const after = await metrics();
      monitor.destroy();

      const fromClients = {};
      for (const m of seen.matchAll(/^\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"/gm)) {
        if (m[1] === 'lua') continue;
        const cmd = m[2].toUpperCase();
        fromClients[cmd] = (fromClients[cmd] ?? 0) + 1;
      }
      const settleTrips = after.settle - before.settle;
      assert.equal(after.lookup - before.lookup, 0, 'the cached key was not looked up again');
      assert.equal(after.admit - before.admit, N, 'one admission per call');
      // Each admission is one EVALSHA; settlements ride the next call's EVALSHA, and the ones that
      // went alone (the last call's at least: no call followed it) are the only other trips.
      assert.ok(settleTrips >= 1, `settle-only trips: ${settleTrips}`);
      assert.deepEqual(fromClients, { EVALSHA: N + settleTrips }, `commands from clients: ${JSON.stringify(fromClients)}`);
      assert.ok(/"lua"\]|\[\d+ lua\]/.test(seen), 'the scripts\' own commands show as lua');
    } finally {
      monitor?.destroy();
      await gw?.kill();
      await redis.close();
    }
  });
});

describe('secrets', () => {
  test('no key, secret or digest appears in stdout, stderr, the access log, the audit trail, /metrics or any error body; Redis holds digests only', { timeout: 30000 }, async () => {
    const redis = await startRedis();
    const adm = adminToken();
    const st = staticKey('static1');
    const wrongStatic = `tg_${st.id}_${randomAlnum(40)}`;
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-secrets-'));
    const logPath = join(dir, 'access.log');
    const auditDir = join(dir, 'audit');
    // With a pepper, created keys are stored as HMAC-SHA-256 digests: those are grepped for too.
    const pepper = randomAlnum(32);
    const hmacHex = (secret) => createHmac('sha256', pepper).update(secret).digest('hex');
    let gw;
    try {
      gw = await startGateway(
        serverYaml({ workers: 2, openAuth: false, freePrices: false, accessLog: logPath }) +
          `auth:
  pepper: ${pepper}
  admin_tokens:
${adm.yaml}audit: {dir: ${auditDir}}
${prices()}${storeYaml('redis', redis)}teams:
  - name: search
    models: ["mock-*"]
    limits: {rpm: 1000}
    budget: {usd: 100, period: daily}
  - name: tiny
    budget: {usd: 0.000001, period: daily}
keys:
  - {id: ${st.id}, team: search, digest: "${st.digest}"}
` +
          mockModels(),
      );
      await waitStoreUp(gw, adm.token);
      const bodies = []; // every response body except the create responses
      const keep = (r, status) => {
        bodies.push(r.text);
        assert.equal(r.status, status, `call #${bodies.length}: ${r.text.slice(0, 300)}`);
        return r;
      };
      const created = [];
      for (const [team, name] of [['search', 'good'], ['search', 'revoked'], ['tiny', 'poor']]) {
        const r = await admin(gw, adm.token, 'POST', '/admin/v1/keys', { team, name });
        assert.equal(r.status, 201);
        created.push({ ...r.json, ...splitKey(r.json.key) });
      }
      const [good, revoked, poor] = created;
      const wrong = `tg_${good.id}_${randomAlnum(43)}`; // right id, different secret
      const wrongSecret = (k) => ({ full: k, secret: splitKey(k).secret, hex: splitKey(k).hex, hmac: hmacHex(splitKey(k).secret) });
      const secrets = [
        { what: 'static key', full: st.full, secret: st.secret, hex: st.hex, hmac: hmacHex(st.secret) },
        { what: 'wrong static key', ...wrongSecret(wrongStatic) },
        ...created.map((c) => ({ what: `created key ${c.name}`, full: c.key, secret: c.secret, hex: c.hex, hmac: hmacHex(c.secret) })),
        { what: 'wrong secret for a created id', ...wrongSecret(wrong) },
        { what: 'admin token', full: adm.token, hex: adm.hex },
      ];

      keep(await chat(gw, good.key, body('mock-gpt')), 200);
      keep(await chat(gw, good.key, body('mock-gpt', { stream: true })), 200);
      keep(await chat(gw, good.key, body('mock-gpt'), { header: 'api-key' }), 200);
      keep(await chat(gw, st.full, body('mock-gpt'), { header: 'x-api-key' }), 200);
      keep(await chat(gw, good.key, body('other-gpt')), 403); // team models
      keep(await chat(gw, good.key, body('no-such-model')), 404);
      keep(await chat(gw, poor.key, body('mock-gpt')), 429); // budget
      keep(await chat(gw, wrong, body('mock-gpt')), 401); // wrong secret
      keep(await chat(gw, wrongStatic, body('mock-gpt')), 401); // wrong static secret
      keep(await chat(gw, `${good.key}!`, body('mock-gpt')), 401); // malformed
      keep(await chat(gw, adm.token, body('mock-gpt')), 401); // the admin token on the caller listener
      keep(await chat(gw, good.key, '{"model": "mock-gpt", "messages": ['), 400); // bad JSON
      keep(await admin(gw, adm.token, 'DELETE', `/admin/v1/keys/${revoked.id}`), 200);
      keep(await chat(gw, revoked.key, body('mock-gpt')), 401); // revoked
      keep(await admin(gw, adm.token, 'GET', `/admin/v1/keys/${good.id}`), 200);
      keep(await admin(gw, 'wrong-admin-token', 'GET', `/admin/v1/keys/${good.id}`), 401);
      keep(await admin(gw, good.key, 'GET', `/admin/v1/keys/${good.id}`), 401); // a caller key as admin token
      keep(await admin(gw, adm.token, 'GET', `/admin/v1/budget?team=search&key=${good.id}`), 200);
      keep(await httpRequest(`${gw.baseURL}/models`, { headers: { authorization: `Bearer ${wrong}` } }), 401);
      keep(await httpRequest(`${gw.url}/v1/nothing?key=${good.key}`, { headers: { authorization: `Bearer ${good.key}` } }), 404);

      await settledBudget(gw, adm.token, 'search', { pred: (x) => x.spent_nano > 0 });
      const stored = await redisContents(redis.port);
      // Redis goes away: the degraded mode's log lines and its 503 bodies are grepped too. Each key
      // once more (the lookups and budgets that fail name what failed, never the key's secret).
      await redis.stop();
      const outage = [];
      for (const key of [good.key, st.full, wrong, wrongStatic, poor.key]) {
        const r = await chat(gw, key, body('mock-gpt'));
        bodies.push(r.text);
        outage.push(r.status);
      }
      assert.ok(outage.includes(503), `no call met the outage: ${outage}`);
      const scraped = await scrape(gw);
      const metrics = scraped.text;
      assert.equal(metricValue(scraped, 'tollgate_policy_store_degraded'), 1, 'the outage was seen');
      await gw.stopClean(); // flushes the access log and the audit trail
      const accessLog = readFileSync(logPath, 'utf8');
      assert.ok(accessLog.includes(good.id), 'the access log names the key id (the id is not secret)');
      const audit = readdirSync(auditDir, { recursive: true })
        .map((f) => join(auditDir, f))
        .filter((f) => statSync(f).isFile())
        .map((f) => readFileSync(f, 'latin1'))
        .join('\n');
      assert.ok(audit.includes(good.id), 'the audit trail names the key id');
      // The store holds each created key's peppered digest (so this is the right place to look)...
      for (const c of created) assert.ok(stored.includes(hmacHex(c.secret)), `key ${c.name}: its HMAC digest is not in Redis`);
      // ...and never a secret or a whole key.
      for (const s of secrets) {
        for (const [label, needle] of [['full', s.full], ['secret', s.secret]]) {
          assert.ok(!needle || !stored.includes(needle), `${s.what}: its ${label} is stored in Redis`);
        }
      }

      // Each place holds what it should (so an empty one cannot pass for a clean one); stdout
      // is empty outside demo mode (the access log goes to its file), and is grepped anyway.
      assert.match(gw.stderr(), /policy store/i, 'stderr has the outage lines');
      assert.match(metrics, /tollgate_policy_decisions_total/);
      const places = {
        stdout: gw.stdout(),
        stderr: gw.stderr(),
        'access log': accessLog,
        '/metrics': metrics,
        'response bodies': bodies.join('\n'),
        'audit trail': audit,
      };
      // Every form a leak could take: the whole value, a prefix (a log that shortens it), a
      // digest in either case (hex compared case-insensitively) or in base64 / base64url.
      const forms = (s) => {
        const out = [['full', s.full, false], ['secret', s.secret, false]];
        if (s.secret) out.push(['secret prefix', s.secret.slice(0, 12), false]);
        for (const [label, hex] of [['digest', s.hex], ['HMAC digest', s.hmac]]) {
          if (!hex) continue;
          const raw = Buffer.from(hex, 'hex');
          out.push([label, hex, true], [`${label} prefix`, hex.slice(0, 16), true],
            [`${label} in base64`, raw.toString('base64').slice(0, 16), false],
            [`${label} in base64url`, raw.toString('base64url').slice(0, 16), false]);
        }
        return out.filter(([, needle]) => needle);
      };
      for (const [where, text] of Object.entries(places)) {
        const lower = text.toLowerCase();
        assert.ok(!text.includes(pepper), `the pepper appears in ${where}`);
        for (const s of secrets) {
          for (const [label, needle, anyCase] of forms(s)) {
            assert.ok(!(anyCase ? lower.includes(needle.toLowerCase()) : text.includes(needle)), `${s.what}: its ${label} appears in ${where}`);
          }
        }
      }
    } finally {
      await gw?.kill();
      await redis.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
