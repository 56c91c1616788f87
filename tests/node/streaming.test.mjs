// Streaming relay at the SSE level: framing, pacing, client disconnects, upstream stalls and
// resets, and the mock provider's faults.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { LLAMA_STREAM_ERROR, fixtureStreamChunks, loadFixtures, shortChunks, startFakeOpenAI } from './lib/fake_openai.mjs';
import { assertOpenAIError, auditRecords, eventually, fetchT, postJson, serverYaml, startGateway } from './lib/gateway.mjs';
import { parseMetrics } from './lib/prom.mjs';
import { contentOf, readSse } from './lib/sse.mjs';

const fx = loadFixtures();
const KEY = 'sk-streaming-provider-key';
const SLOW_MS = 100;
const IDLE_MS = 800;
const msgs = [{ role: 'user', content: 'stream please' }];

let fake;
let gw;

before(async () => {
  fake = await startFakeOpenAI({ apiKey: KEY, slowChunkMs: SLOW_MS });
  gw = await startGateway(
    serverYaml({ workers: 2, timeouts: { drain_ms: 2000 } }) +
      `providers:
  - name: fake
    type: openai_compatible
    base_url: ${fake.baseURL}
    api_key: ${KEY}
    proxy: none
    timeouts:
      first_byte_ms: ${IDLE_MS}
      idle_ms: ${IDLE_MS}
  - name: fake-patient
    type: openai_compatible
    base_url: ${fake.baseURL}
    api_key: ${KEY}
    proxy: none
    timeouts:
      first_byte_ms: 20000
  - name: mock-reset
    type: mock
    fault:
      kind: reset
      after_tokens: 3
  - name: mock-error
    type: mock
    fault:
      kind: error
      status: 503
  - name: mock-stall
    type: mock
    fault:
      kind: stall
      after_tokens: 2
  - name: mock-throw
    type: mock
    fault:
      kind: throw
      after_tokens: 2
  - name: mock-paced
    type: mock
    ttft_ms: 50
    tokens_per_second: 20
    completion_tokens: 10
models:
  - name: gpt-fixture
    provider: fake
    upstream_model: fixture-text
  - name: gpt-slow
    provider: fake
    upstream_model: slow-stream
  - name: gpt-endless
    provider: fake
    upstream_model: endless-stream
  - name: gpt-stall
    provider: fake
    upstream_model: stall-mid-stream
  - name: gpt-hang
    provider: fake
    upstream_model: hang
  - name: gpt-reset
    provider: fake
    upstream_model: reset-mid-stream
  - name: gpt-hang-long
    provider: fake-patient
    upstream_model: hang
  - name: gpt-hang-fallback
    provider: fake
    upstream_model: hang
    fallbacks: [{provider: mock-paced}]
  - name: gpt-gzip
    provider: fake
    upstream_model: gzip-answer
  - name: gpt-gzip-error
    provider: fake
    upstream_model: gzip-error
  - name: gpt-done-hold
    provider: fake
    upstream_model: done-then-hold
  - name: gpt-split
    provider: fake
    upstream_model: split-data-lines
  - name: gpt-llama-error
    provider: fake
    upstream_model: llama-error-line
  - name: mock-reset
    provider: mock-reset
  - name: mock-error
    provider: mock-error
  - name: mock-stall
    provider: mock-stall
  - name: mock-paced
    provider: mock-paced
  - name: mock-throw
    provider: mock-throw
`,
  );
});

after(async () => {
  try {
    if (gw?.alive) await gw.stopClean();
  } finally {
    await gw?.kill();
    await fake?.close();
  }
});

function streamRequest(model, body = {}, init = {}) {
  return fetchT(`${gw.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: msgs, stream: true, ...body }),
    ...init,
  }, 20000);
}

const dataEvents = (sse) => sse.events.filter((e) => e.json !== undefined && e.event === undefined);
const errorEvents = (sse) => sse.events.filter((e) => e.event === 'error');

async function openStreams() {
  const r = await fetchT(`${gw.adminUrl}/metrics`);
  const m = parseMetrics(await r.text());
  const s = m.samples.filter((x) => x.name === 'tollgate_open_streams');
  assert.ok(s.length > 0, 'tollgate_open_streams missing from /metrics');
  return s.reduce((a, x) => a + x.value, 0);
}

/** tollgate_upstream_errors_total of provider `fake`: the sum and each kind's count. */
async function upstreamErrors() {
  const m = parseMetrics(await (await fetchT(`${gw.adminUrl}/metrics`)).text());
  const kinds = {};
  let total = 0;
  for (const s of m.samples.filter((x) => x.name === 'tollgate_upstream_errors_total' && x.labels.provider === 'fake')) {
    kinds[s.labels.kind] = s.value;
    total += s.value;
  }
  return { total, kinds };
}

/** Asserts a well-formed terminal error event and a cleanly closed body. */
function assertErrorEvent(sse, { code, message } = {}) {
  assert.ok(sse.ended && !sse.error && !sse.timedOut, `stream must end cleanly (error=${sse.error}, timedOut=${sse.timedOut})`);
  assert.equal(sse.rest, '', 'no half event at the end');
  const errs = errorEvents(sse);
  assert.equal(errs.length, 1, `one error event expected; raw tail: ${sse.rawText.slice(-400)}`);
  const last = sse.events.filter((e) => e.data !== '[DONE]').at(-1);
  assert.equal(last, errs[0], 'the error event is the last event');
  assert.ok(!sse.done, 'no [DONE] after an error');
  const body = JSON.parse(errs[0].data);
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in body.error, `error.${k} missing in ${errs[0].data}`);
  if (code !== undefined) assert.equal(body.error.code, code, errs[0].data);
  if (message !== undefined) assert.match(body.error.message, message);
  return body.error;
}

describe('SSE relay', () => {
  test('exact framing: recorded chunks relayed one data event each, [DONE] last, event-stream', async () => {
    const r = await streamRequest('gpt-fixture', { stream_options: { include_usage: true } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/event-stream/);
    assert.match(r.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
    const sse = await readSse(r);
    assert.ok(sse.ended && sse.done && sse.rest === '');
    assert.equal(sse.events.at(-1).data, '[DONE]');
    assert.ok(sse.events.every((e) => e.event === undefined), 'chat chunks carry no event name');
    const got = dataEvents(sse).map((e) => e.json);
    const want = fixtureStreamChunks({ stream_options: { include_usage: true } });
    assert.equal(got.length, want.length);
    got.forEach((c, i) => assert.deepEqual(c, want[i], `chunk ${i}`));
  });

  test('chunks are relayed as they come: the first reaches the client before the upstream finished', async () => {
    fake.reset();
    const r = await streamRequest('gpt-slow');
    const sse = await readSse(r);
    assert.ok(sse.done);
    const rec = await fake.waitForRequest((q) => q.body?.model === 'slow-stream');
    assert.ok(rec.finishedAt, 'upstream finished');
    const data = dataEvents(sse);
    assert.equal(contentOf(data.map((e) => e.json)), contentOf(shortChunks(12)));
    const first = data[0].at;
    assert.ok(first < rec.finishedAt - 5 * SLOW_MS, `first chunk at +${first - rec.receivedAt} ms, upstream done at +${rec.finishedAt - rec.receivedAt} ms`);
    const spread = data.at(-1).at - first;
    assert.ok(spread >= 8 * SLOW_MS, `chunks arrived within ${spread} ms: buffered, not relayed`);
  });

  test('client disconnect mid-stream cancels the upstream request promptly', async () => {
    fake.reset();
    const ac = new AbortController();
    const r = await streamRequest('gpt-endless', {}, { signal: ac.signal });
    const sse = await readSse(r, { onEvent: (_e, res) => dataEvents(res).length < 3 });
    assert.ok(sse.stopped);
    ac.abort();
    const cutAt = Date.now();
    const rec = await fake.waitForRequest((q) => q.body?.model === 'endless-stream');
    await fake.waitClosed(rec, 2000);
    assert.equal(rec.closedEarly, true);
    assert.ok(rec.closedAt - cutAt < 2000, `upstream closed ${rec.closedAt - cutAt} ms after the client left`);
    await eventually(async () => (await openStreams()) === 0, { timeoutMs: 3000, what: 'open streams back to 0' });
  });

  test('client disconnect after a stray CRLF or a pipelined request still cancels the upstream promptly', async () => {
    // Bytes after the request keep the socket readable: the watch cannot wait for readiness, and
    // looks for the caller's close at each tick instead.
    // An upstream that has not answered (nothing is written to the caller that could fail), and
    // would wait 20 s for its first byte.
    for (const extra of ['\r\n', 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n']) {
      fake.reset();
      const body = JSON.stringify({ model: 'gpt-hang-long', messages: msgs, stream: true });
      const sock = net.connect(gw.port, '127.0.0.1');
      await once(sock, 'connect');
      sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      const rec = await fake.waitForRequest((q) => q.body?.model === 'hang');
      // After the request was read: the bytes stay in the kernel, the socket readable.
      sock.write(extra);
      await new Promise((r) => setTimeout(r, 300));  // past the sweeper's arming (50-100 ms)
      sock.destroy();
      const cutAt = Date.now();
      await fake.waitClosed(rec, 3000);
      assert.equal(rec.closedEarly, true);
      assert.ok(rec.closedAt - cutAt < 1500, `${JSON.stringify(extra)}: upstream closed ${rec.closedAt - cutAt} ms after the client left`);
    }
    await eventually(async () => (await openStreams()) === 0, { timeoutMs: 3000, what: 'open streams back to 0' });
  });

  test('client gone before the watch is armed (stream, no answer yet) → upstream cancelled well before its timeout', async () => {
    // The disconnect watch is armed by the worker's sweeper 50-100 ms into a call; a caller that
    // left earlier must be seen when it is armed, not at the first-byte timeout.
    fake.reset();
    const ac = new AbortController();
    const pending = fetchT(`${gw.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-hang', messages: msgs, stream: true }),
      signal: ac.signal,
    }).catch((e) => e);
    const rec = await fake.waitForRequest((q) => q.body?.model === 'hang');
    ac.abort();
    const cutAt = Date.now();
    assert.equal((await pending).name, 'AbortError');
    await fake.waitClosed(rec, 3000);
    assert.equal(rec.closedEarly, true);
    assert.ok(rec.closedAt - cutAt < IDLE_MS / 2, `upstream closed ${rec.closedAt - cutAt} ms after the client left; first_byte_ms is ${IDLE_MS}`);
  });

  test('client gone before a whole answer → the answer the provider is generating is awaited, up to first_byte_ms, then closed', async () => {
    // A whole answer is generated (and charged for) once the provider has the request, whether
    // the caller waits or not: the gateway waits for it to bill it (docs/policy.md), but no
    // longer than the upstream's first-byte timeout.
    fake.reset();
    const ac = new AbortController();
    const pending = fetchT(`${gw.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-hang', messages: msgs }),
      signal: ac.signal,
    }).catch((e) => e);
    const rec = await fake.waitForRequest((q) => q.body?.model === 'hang');
    const sentAt = Date.now();
    ac.abort();
    assert.equal((await pending).name, 'AbortError');
    await fake.waitClosed(rec, 3000);
    assert.equal(rec.closedEarly, true);
    const held = rec.closedAt - sentAt;
    assert.ok(held >= IDLE_MS - 100 && held < IDLE_MS + 1500, `upstream closed ${held} ms after the request; first_byte_ms is ${IDLE_MS}`);
  });

  test('upstream stall mid-stream → error event (upstream_timeout) after the idle timeout; upstream closed', async () => {
    fake.reset();
    const r = await streamRequest('gpt-stall');
    assert.equal(r.status, 200);
    const sse = await readSse(r, { timeoutMs: 10000 });
    assert.equal(dataEvents(sse).length, 3, 'the chunks sent before the stall are relayed');
    assertErrorEvent(sse, { code: 'upstream_timeout' });
    const gap = errorEvents(sse)[0].at - dataEvents(sse).at(-1).at;
    assert.ok(gap >= IDLE_MS - 100 && gap < IDLE_MS + 2000, `error event ${gap} ms after the last chunk; idle_ms is ${IDLE_MS}`);
    const rec = await fake.waitForRequest((q) => q.body?.model === 'stall-mid-stream');
    await fake.waitClosed(rec, 2000);
  });

  test('upstream sends no response head → 504 upstream_timeout after first_byte_ms (stream and not)', async () => {
    for (const stream of [false, true]) {
      const t0 = Date.now();
      const r = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-hang', messages: msgs, stream });
      const took = Date.now() - t0;
      assertOpenAIError(r, { status: 504, code: 'upstream_timeout' });
      assert.ok(took >= IDLE_MS - 100 && took < IDLE_MS + 2000, `504 after ${took} ms; first_byte_ms is ${IDLE_MS}`);
    }
  });

  test('upstream reset mid-stream → error event (upstream_error), stream closed properly, counted once', async () => {
    const before = await upstreamErrors();
    const sse = await readSse(await streamRequest('gpt-reset'));
    assert.ok(dataEvents(sse).length >= 1);
    assertErrorEvent(sse, { code: 'upstream_error' });
    const after = await eventually(async () => {
      const a = await upstreamErrors();
      return a.total > before.total ? a : undefined;
    }, { what: 'the reset counted' });
    assert.equal(after.total - before.total, 1, JSON.stringify(after.kinds));
    assert.equal((after.kinds.stream_reset ?? 0) - (before.kinds.stream_reset ?? 0), 1);
  });

  test('[DONE] ends the caller\'s stream at once, though the upstream holds its body open', async () => {
    const t0 = Date.now();
    const sse = await readSse(await streamRequest('gpt-done-hold'), { timeoutMs: 10000 });
    const took = Date.now() - t0;
    assert.ok(sse.ended && !sse.error && sse.done, `ended ${sse.ended}, [DONE] ${sse.done}, error ${sse.error}`);
    assert.equal(errorEvents(sse).length, 0, sse.rawText.slice(-300));
    assert.equal(contentOf(dataEvents(sse).map((e) => e.json)), contentOf(fixtureStreamChunks({})));
    assert.ok(took < IDLE_MS, `the caller's stream ended after ${took} ms; the upstream's idle timeout is ${IDLE_MS} ms`);
  });

  test('a fallback that answers after a timed-out target is logged as it ended, not as the timeout', async () => {
    const r = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-hang-fallback', messages: msgs });
    assert.equal(r.status, 200, r.text);
    const line = await gw.waitForLog((l) => l.model === 'gpt-hang-fallback');
    assert.equal(line.status, 200);
    assert.ok(!line.details, `details ${line.details}`);
    assert.ok(!line.error_code, `error_code ${line.error_code}`);
  });

  test('a bug mid-call (the mock throws): answered 500 or cut, logged and audited, the gateway serves on', async () => {
    const whole = await postJson(`${gw.baseURL}/chat/completions`, { model: 'mock-throw', messages: msgs });
    assertOpenAIError(whole, { status: 500, code: 'internal_error' });
    const sse = await readSse(await streamRequest('mock-throw'));
    assert.ok(!sse.done, 'a stream the gateway failed in does not end with [DONE]');
    assert.equal(contentOf(dataEvents(sse).map((e) => e.json)).split(' ').filter(Boolean).length, 2, sse.rawText);
    const lines = await eventually(() => {
      const l = gw.accessLog().filter((x) => x.model === 'mock-throw');
      return l.length === 2 ? l : undefined;
    }, { what: 'two log lines' });
    assert.deepEqual(lines.map((l) => [l.status, l.details]).sort(), [[200, 'internal_error'], [500, 'internal_error']]);
    const recs = await eventually(() => {
      const all = auditRecords(gw.ready.audit_dir).filter((r) => r.model === 'mock-throw');
      return all.length === 2 ? all : undefined;
    }, { what: 'two audit records' });
    assert.ok(recs.every((r) => r.details === 'internal_error'), JSON.stringify(recs));
    assert.equal((await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-fixture', messages: msgs })).status, 200);
    assert.equal(await openStreams(), 0);
  });

  test('a compressed answer (asked for identity) is 502 upstream_error, never relayed labelled gzip', async () => {
    for (const [model, stream] of [['gpt-gzip', false], ['gpt-gzip', true], ['gpt-gzip-error', false]]) {
      const r = await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, messages: msgs, stream }),
      });
      assert.equal(r.headers.get('content-encoding'), null, `${model} ${stream}`);
      const text = await r.text();
      assertOpenAIError({ status: r.status, json: JSON.parse(text) }, { status: 502, code: 'upstream_error' });
      assert.match(JSON.parse(text).error.message, /Content-Encoding 'gzip'/);
    }
  });

  test('an upstream event over several data lines reaches the caller as one event it can parse', async () => {
    const sse = await readSse(await streamRequest('gpt-split', { stream_options: { include_usage: true } }));
    assert.ok(sse.ended && !sse.error && sse.done);
    assert.equal(errorEvents(sse).length, 0);
    const got = dataEvents(sse).map((e) => e.json);
    assert.deepEqual(got, fixtureStreamChunks({ stream_options: { include_usage: true } }), sse.rawText.slice(0, 400));
  });

  test('llama.cpp `error:` line → standard error event carrying its message', async () => {
    const sse = await readSse(await streamRequest('gpt-llama-error'));
    assert.equal(dataEvents(sse).length, 5);
    assertErrorEvent(sse, { message: new RegExp(LLAMA_STREAM_ERROR.message) });
    assert.ok(sse.events.every((e) => !('error' in e.fields)), 'the non-standard field must not be relayed');
  });
});

describe('mock provider faults and pacing', () => {
  test('paced mock stream arrives token by token', async () => {
    const sse = await readSse(await streamRequest('mock-paced', { stream_options: { include_usage: true } }));
    assert.ok(sse.done);
    const tokens = dataEvents(sse).filter((e) => (e.json.choices?.[0]?.delta?.content ?? '') !== '');
    assert.equal(tokens.length, 10);
    const spread = tokens.at(-1).at - tokens[0].at;
    assert.ok(spread >= 300, `10 tokens at 20/s arrived within ${spread} ms`);
    assert.equal(dataEvents(sse).at(-1).json.usage.completion_tokens, 10);
  });

  // docs/configuration.md: `reset` = "close the connection without the final chunk", i.e. the
  // caller sees its connection cut (no error event, no terminating chunk): it simulates a network
  // reset for clients under test, unlike an upstream reset, which the gateway turns into an event.
  test('fault reset: tokens up to after_tokens, then the connection is cut without the final chunk', async () => {
    const sse = await readSse(await streamRequest('mock-reset'));
    const tokens = dataEvents(sse).filter((e) => (e.json.choices?.[0]?.delta?.content ?? '') !== '');
    assert.equal(tokens.length, 3);
    assert.ok(!sse.done, 'no [DONE]');
    assert.ok(sse.error && !sse.timedOut, `the body must end abnormally (error=${sse.error}, ended=${sse.ended})`);
    assert.ok(!dataEvents(sse).some((e) => e.json.choices?.[0]?.finish_reason), 'no finish chunk');
    const ok = await postJson(`${gw.baseURL}/chat/completions`, { model: 'mock-paced', messages: msgs, max_tokens: 1 });
    assert.equal(ok.status, 200, 'the gateway keeps serving');
  });

  test('fault error: the configured status with an OpenAI error body, stream or not', async () => {
    for (const stream of [false, true]) {
      const r = await postJson(`${gw.baseURL}/chat/completions`, { model: 'mock-error', messages: msgs, stream });
      assertOpenAIError(r, { status: 503 });
      assert.match(r.headers.get('content-type'), /^application\/json/);
    }
  });

  test('fault stall: the client can leave; the gateway releases the stream and keeps serving', async () => {
    const ac = new AbortController();
    const r = await streamRequest('mock-stall', {}, { signal: ac.signal });
    const sse = await readSse(r, {
      onEvent: (_e, res) => dataEvents(res).filter((e) => (e.json.choices?.[0]?.delta?.content ?? '') !== '').length < 2,
    });
    assert.ok(sse.stopped, 'two tokens arrived before the stall');
    ac.abort();
    await eventually(async () => (await openStreams()) === 0, { timeoutMs: 3000, what: 'open streams back to 0' });
    const ok = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-fixture', messages: msgs });
    assert.equal(ok.status, 200);
    assert.equal(ok.json.choices[0].message.content, fx.chatText.choices[0].message.content);
  });
});
