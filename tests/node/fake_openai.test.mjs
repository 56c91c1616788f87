// Validates the fake upstream itself against the recorded fixtures and the official SDK, so that
// a failure in the gateway tests can be trusted to be the gateway's.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { FIXTURE_STREAM_TEXT, loadFixtures, startFakeOpenAI, upstreamErrorMessage } from './lib/fake_openai.mjs';
import { readSse, contentOf } from './lib/sse.mjs';

const fx = loadFixtures();
let fake;
let client;

before(async () => {
  fake = await startFakeOpenAI({ apiKey: 'sk-fake-upstream', slowChunkMs: 30 });
  client = new OpenAI({ apiKey: 'sk-fake-upstream', baseURL: fake.baseURL, maxRetries: 0, timeout: 10000 });
});
after(async () => {
  await fake?.close();
});

describe('fake OpenAI upstream', () => {
  test('non-stream reply is the recorded fixture, with OpenAI headers', async () => {
    const r = await fetch(`${fake.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-fake-upstream', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fixture-text', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/json');
    assert.match(r.headers.get('x-request-id'), /^req_[0-9a-f]{32}$/);
    assert.match(r.headers.get('openai-processing-ms'), /^\d+$/);
    for (const h of ['limit-requests', 'limit-tokens', 'remaining-requests', 'remaining-tokens', 'reset-requests', 'reset-tokens']) {
      assert.ok(r.headers.get(`x-ratelimit-${h}`), `x-ratelimit-${h}`);
    }
    const text = await r.text();
    assert.equal(text, fx.chatTextRaw);
    assert.deepEqual(JSON.parse(text), fx.chatText);
  });

  test('SDK reads the non-stream reply', async () => {
    const c = await client.chat.completions.create({ model: 'fixture-text', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(c.choices[0].message.content, fx.chatText.choices[0].message.content);
    assert.deepEqual(c.usage, fx.chatText.usage);
  });

  test('SDK parses the stream with include_usage: every recorded chunk, usage last', async () => {
    const stream = await client.chat.completions.create({
      model: 'fixture-text',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const got = [];
    for await (const chunk of stream) got.push(chunk);
    assert.equal(got.length, fx.chunks.length);
    assert.deepEqual(got, fx.chunks);
    assert.equal(contentOf(got), FIXTURE_STREAM_TEXT);
    assert.deepEqual(got.at(-1).choices, []);
    assert.equal(got.at(-1).usage.completion_tokens, 300);
    assert.ok(got.slice(0, -1).every((c) => c.usage === null));
  });

  test('stream without include_usage has no usage chunk and no usage key', async () => {
    const stream = await client.chat.completions.create({ model: 'fixture-text', messages: [{ role: 'user', content: 'hi' }], stream: true });
    const got = [];
    for await (const chunk of stream) got.push(chunk);
    assert.equal(got.length, fx.chunks.length - 1);
    assert.ok(got.every((c) => !('usage' in c) && c.choices.length === 1));
    assert.equal(contentOf(got), FIXTURE_STREAM_TEXT);
  });

  test('raw SSE framing: data lines, blank-line separated, [DONE] last, event-stream type', async () => {
    const r = await fetch(`${fake.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-fake-upstream', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fixture-text', messages: [], stream: true }),
    });
    assert.match(r.headers.get('content-type'), /^text\/event-stream/);
    const sse = await readSse(r);
    assert.ok(sse.ended && sse.done);
    assert.equal(sse.rest, '');
    assert.equal(sse.events.at(-1).data, '[DONE]');
    assert.ok(sse.events.every((e) => e.event === undefined));
    assert.ok(sse.rawText.split('\n\n').slice(0, -1).every((block) => block.startsWith('data: ')));
  });

  test('embeddings: fixture as floats, and base64 decoded by the SDK', async () => {
    const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'], encoding_format: 'float' });
    assert.deepEqual(JSON.parse(JSON.stringify(r)), fx.embedding);
    const b = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
    assert.equal(fake.requests.at(-1).body.encoding_format, 'base64');
    b.data.forEach((d, i) => {
      const want = fx.embedding.data[i].embedding;
      assert.equal(d.embedding.length, want.length);
      d.embedding.forEach((v, j) => assert.ok(Math.abs(v - want[j]) < 1e-6));
    });
  });

  test('errors become typed SDK errors; 429 carries retry-after', async () => {
    const cases = [
      ['error-400', OpenAI.BadRequestError, 400, 'unsupported_parameter'],
      ['error-404', OpenAI.NotFoundError, 404, 'model_not_found'],
      ['error-429', OpenAI.RateLimitError, 429, 'rate_limit_exceeded'],
      ['quota-429', OpenAI.RateLimitError, 429, 'insufficient_quota'],
      ['error-500', OpenAI.InternalServerError, 500, null],
    ];
    for (const [model, cls, status, code] of cases) {
      const err = await client.chat.completions.create({ model, messages: [] }).then(
        () => assert.fail(`${model} should fail`),
        (e) => e,
      );
      assert.ok(err instanceof cls, `${model}: ${err}`);
      assert.equal(err.status, status);
      assert.equal(err.code, code);
      assert.equal(err.error.message, upstreamErrorMessage(model));
      if (model === 'error-429') assert.equal(err.headers.get('retry-after'), '1');
    }
  });

  test('the wrong key gets 401 (the fake checks what the gateway sends)', async () => {
    const other = new OpenAI({ apiKey: 'sk-wrong', baseURL: fake.baseURL, maxRetries: 0 });
    await assert.rejects(other.chat.completions.create({ model: 'fixture-text', messages: [] }), OpenAI.AuthenticationError);
  });

  test('data-error-mid-stream makes the SDK throw; reset-mid-stream breaks the stream', async () => {
    const s1 = await client.chat.completions.create({ model: 'data-error-mid-stream', messages: [], stream: true });
    await assert.rejects(async () => {
      for await (const _ of s1);
    }, OpenAI.APIError);
    const s2 = await client.chat.completions.create({ model: 'reset-mid-stream', messages: [], stream: true });
    await assert.rejects(async () => {
      for await (const _ of s2);
    });
  });

  test('llama-error-line uses a non-standard `error:` field (invisible to the SDK, hence the gateway must translate it)', async () => {
    const r = await fetch(`${fake.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-fake-upstream', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama-error-line', messages: [], stream: true }),
    });
    const sse = await readSse(r);
    const last = sse.events.at(-1);
    assert.equal(last.hasData, false);
    assert.equal(JSON.parse(last.fields.error).code, 500);
    assert.equal(sse.done, false);
  });

  test('endless-stream keeps going until the client closes; the close is observed', async () => {
    fake.reset();
    const ac = new AbortController();
    const r = await fetch(`${fake.baseURL}/chat/completions`, {
      method: 'POST',
      signal: ac.signal,
      headers: { authorization: 'Bearer sk-fake-upstream', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'endless-stream', messages: [], stream: true }),
    });
    const sse = await readSse(r, { onEvent: (_ev, res) => res.events.length < 3 });
    assert.equal(sse.stopped, true);
    const rec = await fake.waitForRequest((q) => q.body?.model === 'endless-stream');
    await fake.waitClosed(rec, 2000);
    assert.equal(rec.closedEarly, true);
  });
});
