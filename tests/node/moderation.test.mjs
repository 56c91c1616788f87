// External moderation (content_filters.moderation) through the gateway, with the official OpenAI
// SDK: the fake upstream's POST /v1/moderations flags any input with FLAGME (category violence),
// answers 500 for MODFAIL and never answers for MODSLOW. A flagged prompt is refused with 400
// content_filtered before it is sent upstream; a failing endpoint fails closed (503
// moderation_unavailable, also on a timeout) or open, as configured; a streamed answer is checked
// in windows and ends with finish_reason content_filter, an error event and [DONE] before any text
// after the flagged window; a flagged whole answer is withheld. The official SDK reads the fake's
// moderation answer, so its shape is the real one.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { startFakeOpenAI } from './lib/fake_openai.mjs';
import { checkRefused, serverYaml, startGateway } from './lib/gateway.mjs';
import { chat, metricValue, scrape, staticKey } from './lib/policy_helpers.mjs';

let fake;
let closed; // prompts and answers moderated, fails closed, 300 ms timeout
let open; // answers only, in 32-byte windows, fails open
let closedClient;
let openClient;

const gatewayYaml = (moderation) => serverYaml() + `content_filters:
  rules:
    - {name: aws, detector: aws_access_key, action: block}
  prompts: []
  moderation: ${moderation}
providers:
  - {name: up, type: openai_compatible, base_url: "${fake.baseURL}", proxy: none}
models:
  - {name: echo, provider: up, upstream_model: echo}
  - {name: data-error, provider: up, upstream_model: data-error-mid-stream}
`;

before(async () => {
  fake = await startFakeOpenAI();
  closed = await startGateway(gatewayYaml('{provider: up, timeout_ms: 300}'));
  open = await startGateway(gatewayYaml('{provider: up, prompts: false, window_bytes: 32, on_error: fail_open}'));
  closedClient = new OpenAI({ apiKey: 'unused', baseURL: closed.baseURL, maxRetries: 0 });
  openClient = new OpenAI({ apiKey: 'unused', baseURL: open.baseURL, maxRetries: 0 });
});

after(async () => {
  try {
    await closed?.stopClean();
    await open?.stopClean();
  } finally {
    await fake?.close();
  }
});

const ask = (content, extra = {}) => ({ model: 'echo', messages: [{ role: 'user', content }], ...extra });
const chatCalls = () => fake.requests.filter((r) => r.path === '/v1/chat/completions').length;

describe('moderation endpoint and model grants', () => {
  let gated;
  const key = staticKey('echoonly1');
  before(async () => {
    gated = await startGateway(serverYaml({ openAuth: false }) + `auth:
  required: true
teams:
  - {name: narrow, models: ["echo"]}
keys:
  - {id: ${key.id}, team: narrow, digest: "${key.digest}"}
content_filters:
  rules:
    - {name: aws, detector: aws_access_key, action: block}
  moderation: {provider: up, timeout_ms: 300}
providers:
  - {name: up, type: openai_compatible, base_url: "${fake.baseURL}", proxy: none}
models:
  - {name: echo, provider: up, upstream_model: echo}
  - {name: echo-other, provider: up, upstream_model: echo}
`);
  });
  after(async () => gated?.stopClean());

  test('a caller that leaves while its prompt is moderated is not admitted, and nothing is sent upstream', { timeout: 15000 }, async () => {
    // fail_open and a moderation call that never answers (MODSLOW): after its 300 ms timeout the
    // call would go on, but its caller left at 150 ms.
    const lenient = await startGateway(gatewayYaml('{provider: up, timeout_ms: 300, on_error: fail_open}'));
    try {
      // One call first: the next finds a pooled upstream connection, nothing to connect.
      const first = await fetch(`${lenient.baseURL}/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ask('hello')),
      });
      assert.equal(first.status, 200, await first.text());
      const calls = chatCalls();
      const ctl = new AbortController();
      const pending = fetch(`${lenient.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(ask('please MODSLOW')),
        signal: ctl.signal,
      }).catch((e) => e);
      setTimeout(() => ctl.abort(), 150);
      assert.equal((await pending).name, 'AbortError');
      const line = await lenient.waitForLog((l) => l.model === 'echo' && l.status !== 200);
      assert.equal(line.details, 'client_disconnected', JSON.stringify(line));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(chatCalls(), calls, 'the prompt went upstream for a caller that had left');
      await lenient.stopClean();
    } finally {
      await lenient.kill();
    }
  });

  test('a model outside the grant is 403 model_not_allowed before any filter or moderation call sees the prompt', async () => {
    const moderations = () => fake.requests.filter((r) => r.path === '/v1/moderations').length;
    const before = moderations();
    // A flagged prompt, and one a local rule blocks: the grant answers first either way.
    for (const content of ['please FLAGME', 'AKIAIOSFODNN7EXAMPLE']) {
      const r = await chat(gated, key.full, { model: 'echo-other', messages: [{ role: 'user', content }] });
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.error.code, 'model_not_allowed', r.text);
    }
    assert.equal(moderations(), before, 'the prompt was sent to the moderation endpoint');
    // The granted model is moderated as before.
    const ok = await chat(gated, key.full, { model: 'echo', messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(ok.status, 200, ok.text);
    assert.ok(moderations() > before);
  });
});

describe('moderation endpoint', () => {
  test('the fake speaks the moderation API: the official SDK reads its answer', async () => {
    const sdk = new OpenAI({ apiKey: 'unused', baseURL: fake.baseURL, maxRetries: 0 });
    const r = await sdk.moderations.create({ model: 'omni-moderation-latest', input: ['fine', 'FLAGME now'] });
    assert.equal(r.results.length, 2);
    assert.equal(r.results[0].flagged, false);
    assert.equal(r.results[1].flagged, true);
    assert.equal(r.results[1].categories.violence, true);
  });

  test('a flagged prompt is refused with 400 content_filtered naming the categories, never sent upstream', async () => {
    const calls = chatCalls();
    await assert.rejects(closedClient.chat.completions.create(ask('please FLAGME')), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.equal(e.code, 'content_filtered');
      assert.match(e.message, /moderation endpoint \(categories: violence\)/);
      return true;
    });
    assert.equal(chatCalls(), calls);
    const mod = fake.requests.filter((r) => r.path === '/v1/moderations').at(-1);
    assert.equal(mod.body.model, 'omni-moderation-latest');
    assert.deepEqual(mod.body.input, ['please FLAGME']);
  });

  test('a clean call is checked on the way in and out, and answered', async () => {
    const before = await scrape(closed);
    const r = await closedClient.chat.completions.create(ask('hello there'));
    assert.equal(r.choices[0].message.content, 'hello there');
    const m = await scrape(closed);
    const delta = (labels) => metricValue(m, 'tollgate_moderation_calls_total', labels) - (metricValue(before, 'tollgate_moderation_calls_total', labels) ?? 0);
    assert.equal(delta({ direction: 'prompt', outcome: 'passed' }), 1);
    assert.equal(delta({ direction: 'response', outcome: 'passed' }), 1);
  });

  test('a failing or silent endpoint fails closed: 503 moderation_unavailable, within the timeout', async () => {
    for (const word of ['MODFAIL', 'MODSLOW']) {
      const t0 = Date.now();
      await assert.rejects(closedClient.chat.completions.create(ask(`x ${word}`)), (e) => {
        assert.ok(e instanceof OpenAI.InternalServerError, `${word}: ${e.constructor.name}`);
        assert.equal(e.status, 503);
        assert.equal(e.code, 'moderation_unavailable');
        return true;
      });
      assert.ok(Date.now() - t0 < 3000, `${word}: answered after ${Date.now() - t0} ms`);
    }
    // The gateway keeps serving.
    assert.equal((await closedClient.chat.completions.create(ask('still here'))).choices[0].message.content, 'still here');
  });

  test('a streamed answer is moderated in windows: it stops before any text after the flagged window', async () => {
    const head = 'The first part of the answer is harmless and long enough. ';
    const text = head + 'Then FLAGME appears, and a long tail follows: TAIL-MARKER-TEXT after it, far beyond the window.';
    const chunks = [];
    const stream = await openClient.chat.completions.create(ask(text, { stream: true }));
    // The SDK raises the stream's error event as an APIError, after the chunks before it.
    await assert.rejects(
      (async () => {
        for await (const c of stream) chunks.push(c);
      })(),
      (e) => {
        assert.match(e.message, /flagged by the moderation endpoint \(categories: violence\)/);
        return true;
      },
    );
    const out = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    assert.ok(out.startsWith('The first part'), out);
    assert.ok(!out.includes('TAIL-MARKER'), out);
    assert.ok(!out.includes('FLAGME'), out);
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'content_filter');
  });

  test('with n answers, each later answer is still checked in windows after the first has finished', async () => {
    // The fake's answers start 2k pieces apart, so answer 0 ends first. Each later chunk went to
    // the endpoint alone once it had: a call per token, stalling the stream a round trip each.
    const text = 'A harmless answer, long enough to fill a few windows of moderation.';
    const n = 5;
    const before = await scrape(open);
    const stream = await openClient.chat.completions.create(ask(text, { stream: true, n }));
    const got = Array.from({ length: n }, () => '');
    for await (const c of stream) for (const ch of c.choices) got[ch.index] += ch.delta?.content ?? '';
    assert.deepEqual(got, Array(n).fill(text));
    const m = await scrape(open);
    const calls = metricValue(m, 'tollgate_moderation_calls_total', { direction: 'response', outcome: 'passed' }) -
      (metricValue(before, 'tollgate_moderation_calls_total', { direction: 'response', outcome: 'passed' }) ?? 0);
    const windows = Math.ceil((n * text.length) / 32);
    assert.ok(calls >= 1 && calls <= windows + 1, `${calls} moderation calls for ${n * text.length} bytes in 32-byte windows`);
  });

  test('the raw stream ends with an error event naming content_filtered, then [DONE]', async () => {
    const res = await fetch(`${open.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(ask('safe words first, then FLAGME and more words after that point here', { stream: true })),
    });
    assert.equal(res.status, 200);
    const body = await res.text();
    const events = body.split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    const err = events.find((e) => e.startsWith('event: error'));
    assert.ok(err, body);
    assert.equal(JSON.parse(err.split('\n').find((l) => l.startsWith('data: ')).slice(6)).error.code, 'content_filtered');
  });

  test('a stream a local rule blocks ends once: its checked text, one content_filter end, one [DONE]', async () => {
    const res = await fetch(`${open.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(ask('the key is AKIAIOSFODNN7EXAMPLE and more', { stream: true })),
    });
    const events = (await res.text()).split('\n\n').filter(Boolean);
    assert.equal(events.filter((e) => e === 'data: [DONE]').length, 1);
    assert.equal(events.filter((e) => e.startsWith('event: error')).length, 1);
    const chunks = events.filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
    assert.equal(chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join(''), 'the key is ');
    assert.equal(chunks.filter((c) => c.choices?.[0]?.finish_reason === 'content_filter').length, 1);
  });

  test('a flagged whole answer is withheld: empty content, finish_reason content_filter', async () => {
    const r = await openClient.chat.completions.create(ask('an answer that says FLAGME'));
    assert.equal(r.choices[0].message.content, '');
    assert.equal(r.choices[0].finish_reason, 'content_filter');
  });

  test('a stream that fails in band (an error event) still reaches the caller with its error, not a silent end', async () => {
    // Text held for its window went out with the error event only when the stream ended by a
    // transport close; an error event broke the loop with both still held.
    const err = await openClient.chat.completions
      .create({ model: 'data-error', messages: [{ role: 'user', content: 'hi' }], stream: true })
      .then(async (s) => {
        for await (const _ of s);
        return null;
      })
      .catch((e) => e);
    assert.ok(err instanceof OpenAI.APIError, `the stream ended without its error: ${err}`);
    assert.match(String(err.message), /had an error while processing/);
  });

  test('fail_open: a failing endpoint lets the answer through, and the failure is counted', async () => {
    const r = await openClient.chat.completions.create(ask('this answer trips MODFAIL'));
    assert.equal(r.choices[0].message.content, 'this answer trips MODFAIL');
    const m = await scrape(open);
    assert.ok(metricValue(m, 'tollgate_moderation_calls_total', { direction: 'response', outcome: 'failed' }) >= 1);
    assert.ok(metricValue(m, 'tollgate_moderation_calls_total', { direction: 'response', outcome: 'flagged' }) >= 2);
  });
});

describe('moderation config', () => {
  const refused = (moderation, pattern) => checkRefused(serverYaml() + `content_filters:
  moderation: ${moderation}
providers:
  - {name: m, type: mock}
  - {name: up, type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  - {name: x, provider: m}
`, pattern);
  test('an unknown or non-OpenAI provider, a bad on_error or action is refused at load', async () => {
    await refused('{provider: nope}', /content_filters\.moderation\.provider: unknown provider 'nope'/);
    await refused('{provider: m}', /'m' is a mock provider; moderation needs an openai_compatible one/);
    await refused('{provider: up, on_error: maybe}', /on_error: expected fail_closed or fail_open/);
    await refused('{provider: up, action: redact}', /moderation\.action: expected block or flag/);
    await refused('{model: x}', /moderation\.provider: required/);
  });
});
