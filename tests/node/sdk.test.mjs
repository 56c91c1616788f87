// The official openai SDK, pointed at the gateway, which relays to the fake OpenAI upstream
// (and to the built-in mock provider).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import {
  DATA_STREAM_ERROR,
  FIXTURE_STREAM_TEXT,
  LLAMA_STREAM_ERROR,
  loadFixtures,
  startFakeOpenAI,
  upstreamErrorMessage,
} from './lib/fake_openai.mjs';
import { assertOpenAIError, fetchT, httpRequest, postJson, serverYaml, startGateway } from './lib/gateway.mjs';
import { contentOf } from './lib/sse.mjs';

const fx = loadFixtures();
const PROVIDER_KEY = 'sk-provider-secret-0123456789';
const CALLER_KEY = 'sk-caller-key-abcdef';

/** public model name → upstream model on the fake */
const FAKE_MODELS = {
  'gpt-fixture': 'fixture-text',
  'embed-fixture': 'text-embedding-3-small',
  'rate-limited': 'error-429',
  'rate-limited-once': 'error-429-once',
  'wrong-upstream-key': 'error-401',
  'html-error': 'html-502',
  broken: 'error-500',
  resetting: 'reset-mid-stream',
  'llama-broken': 'llama-error-line',
  'llama-broken-wrapped': 'llama-error-line-wrapped',
  'data-error': 'data-error-mid-stream',
  'vllm-old': 'vllm-old-error',
  tgi: 'tgi-error',
  'llama-http': 'llama-http-error',
  hop: 'hop-headers',
  trailers: 'chunked-trailers',
  'org/slashed-fixture': 'fixture-text',
};

let fake;
let gw;
let client;

function config(fakeURL) {
  const models = Object.entries(FAKE_MODELS)
    .map(([name, up]) => `  - name: ${name}\n    provider: fake\n    upstream_model: ${up}\n`)
    .join('');
  return (
    serverYaml({ workers: 2, limits: { max_body_bytes: 65536 } }) +
    `providers:
  - name: fake
    type: openai_compatible
    base_url: ${fakeURL}
    api_key: \${env:TOLLGATE_TEST_FAKE_KEY}
    proxy: none
    headers:
      x-extra-header: from-config
    timeouts:
      first_byte_ms: 5000
      idle_ms: 5000
  - name: mock
    type: mock
    embedding_dimensions: 8
models:
${models}  - name: mock-gpt
    provider: mock
  - name: mock-embed
    provider: mock
`
  );
}

before(async () => {
  fake = await startFakeOpenAI({ apiKey: PROVIDER_KEY, slowChunkMs: 50 });
  gw = await startGateway(config(fake.baseURL), { env: { TOLLGATE_TEST_FAKE_KEY: PROVIDER_KEY } });
  client = new OpenAI({ apiKey: CALLER_KEY, baseURL: gw.baseURL, maxRetries: 0, timeout: 15000 });
});

after(async () => {
  try {
    if (gw?.alive) await gw.stopClean();
  } finally {
    await gw?.kill();
    await fake?.close();
  }
});

const msgs = [{ role: 'user', content: 'Invent a new holiday and describe its traditions.' }];

async function drain(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

async function expectError(promise) {
  return promise.then(
    (v) => assert.fail(`expected an error, got ${JSON.stringify(v).slice(0, 300)}`),
    (e) => e,
  );
}

describe('openai SDK through the gateway to an OpenAI-compatible upstream', () => {
  test('chat, non-stream: the recorded completion arrives unchanged', async () => {
    fake.reset();
    const { data: c, response } = await client.chat.completions.create({ model: 'gpt-fixture', messages: msgs }).withResponse();
    assert.equal(c.choices[0].message.content, fx.chatText.choices[0].message.content);
    assert.equal(c.choices[0].finish_reason, 'stop');
    assert.equal(c.id, fx.chatText.id);
    assert.deepEqual(c.usage, fx.chatText.usage);
    assert.match(response.headers.get('content-type'), /^application\/json/);
    assert.match(response.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
  });

  test('the upstream request: path, provider key, rewritten model, JSON type, config headers', async () => {
    fake.reset();
    await client.chat.completions.create({ model: 'gpt-fixture', messages: msgs, temperature: 0.25, user: 'u-1' });
    const rec = await fake.waitForRequest((r) => r.body?.model === 'fixture-text');
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/v1/chat/completions');
    assert.equal(rec.headers.authorization, `Bearer ${PROVIDER_KEY}`);
    assert.match(rec.headers['content-type'], /^application\/json/);
    assert.equal(rec.headers['x-extra-header'], 'from-config');
    assert.equal(rec.body.model, 'fixture-text');
    assert.deepEqual(rec.body.messages, msgs);
    assert.equal(rec.body.temperature, 0.25);
    assert.equal(rec.body.user, 'u-1');
    const all = JSON.stringify(rec.rawHeaders);
    assert.ok(!all.includes(CALLER_KEY), `caller key leaked upstream: ${all}`);
  });

  test('hop-by-hop headers are not forwarded, in either direction', async () => {
    fake.reset();
    const res = await httpRequest(`${gw.baseURL}/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${CALLER_KEY}`,
        connection: 'keep-alive, x-drop-me',
        'x-drop-me': 'secret-hop',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        'proxy-connection': 'keep-alive',
      },
      body: JSON.stringify({ model: 'hop', messages: msgs }),
    });
    assert.equal(res.status, 200, res.text);
    const rec = await fake.waitForRequest((r) => r.body?.model === 'hop-headers');
    for (const h of ['x-drop-me', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection', 'upgrade', 'trailer']) {
      assert.equal(rec.headers[h], undefined, `upstream received hop-by-hop header ${h}`);
    }
    assert.ok(!/upgrade|x-drop-me/i.test(rec.headers.connection ?? ''), `upstream connection: ${rec.headers.connection}`);
    for (const h of ['x-upstream-hop', 'proxy-authenticate', 'keep-alive']) {
      assert.equal(res.headers[h], undefined, `caller received upstream hop-by-hop header ${h}`);
    }
    assert.ok(!/x-upstream-hop/i.test(res.headers.connection ?? ''));
  });

  test('an upstream answer with trailer fields after a chunked body: the answer arrives whole, the trailers do not', async () => {
    // (Trailers once grew the upstream parser's storage under the head's views: the asan pass of
    // this test read freed memory.)
    for (let i = 0; i < 3; i++) {
      const res = await httpRequest(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${CALLER_KEY}` },
        body: JSON.stringify({ model: 'trailers', messages: msgs }),
      });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.choices[0].message.content, fx.chatText.choices[0].message.content);
      assert.equal(res.headers['openai-version'], '2020-10-01', 'the head\'s own fields still pass through');
      for (const name of Object.keys(res.headers)) assert.ok(!name.startsWith('x-trailer-'), `trailer ${name} passed on`);
    }
  });

  test('stream with include_usage: recorded chunks, usage:null on each, usage chunk with choices [] last', async () => {
    fake.reset();
    const chunks = await drain(
      await client.chat.completions.create({ model: 'gpt-fixture', messages: msgs, stream: true, stream_options: { include_usage: true } }),
    );
    assert.equal(contentOf(chunks), FIXTURE_STREAM_TEXT);
    assert.equal(chunks.length, fx.chunks.length);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, fx.chunks.at(-1).usage);
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null, 'chunks before the usage chunk carry usage:null');
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
    const rec = await fake.waitForRequest((r) => r.body?.stream === true);
    assert.equal(rec.body.stream_options?.include_usage, true);
  });

  test('stream without include_usage: the gateway asks upstream for usage but the caller sees none', async () => {
    fake.reset();
    const chunks = await drain(await client.chat.completions.create({ model: 'gpt-fixture', messages: msgs, stream: true }));
    assert.equal(contentOf(chunks), FIXTURE_STREAM_TEXT);
    assert.equal(chunks.length, fx.chunks.length - 1, 'the usage-only chunk must be removed');
    for (const c of chunks) {
      assert.ok(!('usage' in c), `chunk has a usage key: ${JSON.stringify(c).slice(0, 200)}`);
      assert.equal(c.choices.length, 1);
    }
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    const rec = await fake.waitForRequest((r) => r.body?.stream === true);
    assert.equal(rec.body.stream_options?.include_usage, true, 'gateway must ask the upstream for usage');
  });

  test('stream with include_usage:false explicitly behaves as not asked', async () => {
    const chunks = await drain(
      await client.chat.completions.create({ model: 'gpt-fixture', messages: msgs, stream: true, stream_options: { include_usage: false } }),
    );
    assert.equal(chunks.length, fx.chunks.length - 1);
    assert.ok(chunks.every((c) => !('usage' in c)));
  });

  test('embeddings: default (base64 on the wire) and float', async () => {
    fake.reset();
    const b = await client.embeddings.create({ model: 'embed-fixture', input: ['first', 'second'] });
    assert.equal(b.data.length, 2);
    b.data.forEach((d, i) => {
      const want = fx.embedding.data[i].embedding;
      assert.equal(d.index, i);
      assert.equal(d.embedding.length, want.length);
      d.embedding.forEach((v, j) => assert.ok(Math.abs(v - want[j]) < 1e-6, `embedding[${i}][${j}] ${v} vs ${want[j]}`));
    });
    assert.deepEqual(b.usage, fx.embedding.usage);
    const rec = await fake.waitForRequest((r) => r.path === '/v1/embeddings');
    assert.equal(rec.body.model, 'text-embedding-3-small');
    assert.equal(rec.body.encoding_format, 'base64');
    assert.deepEqual(rec.body.input, ['first', 'second']);
    assert.equal(rec.headers.authorization, `Bearer ${PROVIDER_KEY}`);

    const f = await client.embeddings.create({ model: 'embed-fixture', input: ['first', 'second'], encoding_format: 'float' });
    assert.deepEqual(
      f.data.map((d) => d.embedding),
      fx.embedding.data.map((d) => d.embedding),
    );
  });

  test('models list names every configured model', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    for (const name of [...Object.keys(FAKE_MODELS), 'mock-gpt', 'mock-embed']) assert.ok(ids.includes(name), `${name} missing from ${ids}`);
  });

  test('models retrieve answers one model as the list has it; unknown → NotFoundError model_not_found', async () => {
    const m = await client.models.retrieve('gpt-fixture');
    assert.deepEqual({ id: m.id, object: m.object, owned_by: m.owned_by }, { id: 'gpt-fixture', object: 'model', owned_by: 'fake' });
    const listed = [];
    for await (const x of client.models.list()) listed.push(x);
    assert.deepEqual(m, listed.find((x) => x.id === 'gpt-fixture'));
    // The SDK percent-encodes the id (org%2Fslashed-fixture); an unencoded slash is found too.
    assert.equal((await client.models.retrieve('org/slashed-fixture')).id, 'org/slashed-fixture');
    const raw = await fetchT(`${gw.baseURL}/models/org/slashed-fixture`, { headers: { authorization: `Bearer ${CALLER_KEY}` } });
    assert.equal(raw.status, 200);
    assert.equal((await raw.json()).id, 'org/slashed-fixture');

    const err = await expectError(client.models.retrieve('no-such-model'));
    assert.ok(err instanceof OpenAI.NotFoundError, String(err));
    assert.equal(err.code, 'model_not_found');
    assert.match(err.message, /no-such-model/);
    // Bytes that are no UTF-8 are echoed as U+FFFD: the error body stays valid JSON text.
    const raw_ff = await fetchT(`${gw.baseURL}/models/gpt%FF%FE`);
    assert.equal(raw_ff.status, 404);
    const ffText = new TextDecoder('utf-8', { fatal: true }).decode(await raw_ff.arrayBuffer());
    assert.equal(JSON.parse(ffText).error.code, 'model_not_found');
    assert.match(JSON.parse(ffText).error.message, /'gpt\ufffd\ufffd'/);
    // An id shaped like a key is masked to the key's id before anything logs it: never looked up
    // as that id (the model "broken"), and never echoed.
    const keyish = await fetchT(`${gw.baseURL}/models/tg_broken_s3cretpart`);
    assert.equal(keyish.status, 404);
    const keyishText = await keyish.text();
    assert.equal(JSON.parse(keyishText).error.code, 'model_not_found');
    assert.doesNotMatch(keyishText, /s3cretpart/);
    assert.equal((await client.models.retrieve('broken')).id, 'broken');
    // Wrong inputs: bad percent-encoding is 400; another method is 405 with Allow.
    const bad = await fetchT(`${gw.baseURL}/models/gpt%zzfixture`);
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, 'bad_request');
    const del = await fetchT(`${gw.baseURL}/models/gpt-fixture`, { method: 'DELETE' });
    assert.equal(del.status, 405);
    assert.equal(del.headers.get('allow'), 'GET');
    assert.equal((await del.json()).error.code, 'method_not_allowed');
  });

  test('unknown model → NotFoundError model_not_found, upstream untouched', async () => {
    fake.reset();
    const err = await expectError(client.chat.completions.create({ model: 'no-such-model', messages: msgs }));
    assert.ok(err instanceof OpenAI.NotFoundError, String(err));
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    assert.equal(fake.requests.length, 0);
  });

  test('oversized body → 413 request_too_large', async () => {
    const big = 'x'.repeat(100 * 1024);
    const err = await expectError(client.chat.completions.create({ model: 'gpt-fixture', messages: [{ role: 'user', content: big }] }));
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.equal(err.status, 413, String(err));
    assert.equal(err.code, 'request_too_large');
  });

  test('upstream 401 (the gateway\'s own key refused) → 502 upstream_authentication_failed, not the caller\'s AuthenticationError', async () => {
    const err = await expectError(client.chat.completions.create({ model: 'wrong-upstream-key', messages: msgs }));
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 502);
    assert.equal(err.code, 'upstream_authentication_failed');
    assert.equal(err.type, 'server_error');
    // OpenAI's text quotes the end of the key it refused: not passed on.
    assert.ok(!/Incorrect API key|sk-/.test(err.error.message), err.error.message);
  });

  test('an upstream error page in HTML reaches the caller as OpenAI-shaped JSON, typed so', async () => {
    const r = await fetch(`${gw.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CALLER_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'html-error', messages: msgs }),
    });
    assert.equal(r.status, 502);
    assert.match(r.headers.get('content-type'), /^application\/json/);
    const e = (await r.json()).error;
    assert.equal(e.type, 'server_error');
    assert.match(e.message, /502 Bad Gateway/);
  });

  test('upstream 429 → RateLimitError, message and retry-after passed through (maxRetries 0)', async () => {
    fake.reset();
    const err = await expectError(client.chat.completions.create({ model: 'rate-limited', messages: msgs }));
    assert.ok(err instanceof OpenAI.RateLimitError, String(err));
    assert.equal(err.status, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.equal(err.error.message, upstreamErrorMessage('error-429'));
    assert.equal(err.headers.get('retry-after'), '1');
    assert.equal(fake.requestsFor('error-429').length, 1, 'neither SDK nor gateway retried');
  });

  test('upstream 429 with maxRetries 1: the SDK waits retry-after (1 s) and the retry succeeds', async () => {
    fake.reset();
    const retrying = new OpenAI({ apiKey: CALLER_KEY, baseURL: gw.baseURL, maxRetries: 1, timeout: 15000 });
    const c = await retrying.chat.completions.create({ model: 'rate-limited-once', messages: msgs });
    assert.equal(c.choices[0].message.content, fx.chatText.choices[0].message.content);
    const reqs = fake.requestsFor('error-429-once');
    assert.equal(reqs.length, 2);
    const gap = reqs[1].receivedAt - reqs[0].receivedAt;
    assert.ok(gap >= 900 && gap < 5000, `retry came ${gap} ms after the 429; retry-after was 1 s`);
  });

  test('upstream 500 → InternalServerError with the upstream message', async () => {
    const err = await expectError(client.chat.completions.create({ model: 'broken', messages: msgs }));
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 500);
    assert.equal(err.error.message, upstreamErrorMessage('error-500'));
  });

  test('non-OpenAI error shapes (vLLM old, TGI, llama.cpp) are rewritten to OpenAI shape, status kept', async () => {
    const cases = [
      ['vllm-old', 'vllm-old-error', 400, OpenAI.BadRequestError],
      ['tgi', 'tgi-error', 422, OpenAI.UnprocessableEntityError],
      ['llama-http', 'llama-http-error', 400, OpenAI.BadRequestError],
    ];
    for (const [name, upstream, status, cls] of cases) {
      const raw = await postJson(`${gw.baseURL}/chat/completions`, { model: name, messages: msgs });
      const e = assertOpenAIError(raw, { status });
      assert.equal(e.message, upstreamErrorMessage(upstream), `${name}: message must be kept`);
      const err = await expectError(client.chat.completions.create({ model: name, messages: msgs }));
      assert.ok(err instanceof cls, `${name}: ${err}`);
    }
  });

  test('mid-stream upstream reset → SDK stream iteration throws APIError after the first chunks', async () => {
    const stream = await client.chat.completions.create({ model: 'resetting', messages: msgs, stream: true });
    const got = [];
    const err = await expectError((async () => {
      for await (const c of stream) got.push(c);
    })());
    assert.ok(err instanceof OpenAI.APIError, `expected APIError, got ${err?.constructor?.name}: ${err}`);
    assert.ok(got.length >= 1 && got.length <= 5, `chunks before the error: ${got.length}`);
  });

  test('llama.cpp `error:` SSE line → SDK stream iteration throws APIError with its message', async () => {
    for (const model of ['llama-broken', 'llama-broken-wrapped']) {
      const stream = await client.chat.completions.create({ model, messages: msgs, stream: true });
      const got = [];
      const err = await expectError((async () => {
        for await (const c of stream) got.push(c);
      })());
      assert.ok(err instanceof OpenAI.APIError, `${model}: expected APIError, got ${err}`);
      assert.match(String(err.message), new RegExp(LLAMA_STREAM_ERROR.message), model);
      assert.equal(got.length, 5, `${model}: chunks before the error`);
    }
  });

  test('`data: {"error":...}` mid-stream → SDK stream iteration throws APIError', async () => {
    const stream = await client.chat.completions.create({ model: 'data-error', messages: msgs, stream: true });
    const err = await expectError(drain(stream));
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.match(String(err.message), new RegExp(DATA_STREAM_ERROR.error.message.slice(0, 30)));
  });
});

describe('openai SDK through the gateway to the mock provider', () => {
  test('non-stream: default 16 tokens, usage consistent, deterministic', async () => {
    const a = await client.chat.completions.create({ model: 'mock-gpt', messages: msgs });
    const b = await client.chat.completions.create({ model: 'mock-gpt', messages: msgs });
    assert.equal(a.object, 'chat.completion');
    assert.equal(a.choices[0].message.role, 'assistant');
    assert.ok(a.choices[0].message.content.length > 0);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content, 'mock must be deterministic');
    assert.equal(a.usage.completion_tokens, 16);
    assert.ok(a.usage.prompt_tokens > 0);
    assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
  });

  test('non-stream with max_tokens: that many tokens, finish_reason length', async () => {
    const a = await client.chat.completions.create({ model: 'mock-gpt', messages: msgs, max_tokens: 5 });
    assert.equal(a.usage.completion_tokens, 5);
    assert.equal(a.choices[0].finish_reason, 'length');
  });

  test('stream with include_usage: completion_tokens equals the streamed content tokens', async () => {
    const chunks = await drain(
      await client.chat.completions.create({ model: 'mock-gpt', messages: msgs, stream: true, stream_options: { include_usage: true } }),
    );
    const tokenChunks = chunks.filter((c) => (c.choices?.[0]?.delta?.content ?? '') !== '');
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, tokenChunks.length);
    assert.equal(last.usage.completion_tokens, 16);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
    const ids = new Set(chunks.map((c) => c.id));
    assert.equal(ids.size, 1, 'all chunks share one id');
    assert.ok(chunks.some((c) => c.choices?.[0]?.finish_reason === 'stop'));
  });

  test('stream without include_usage: no usage anywhere; same usage count as non-stream', async () => {
    const chunks = await drain(await client.chat.completions.create({ model: 'mock-gpt', messages: msgs, stream: true, max_tokens: 7 }));
    assert.ok(chunks.every((c) => !('usage' in c) || c.usage === undefined), 'no usage key');
    assert.ok(chunks.every((c) => c.choices.length === 1));
    const tokenChunks = chunks.filter((c) => (c.choices[0].delta?.content ?? '') !== '');
    assert.equal(tokenChunks.length, 7);
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'length');
  });

  test('embeddings: one vector per input, embedding_dimensions long, deterministic', async () => {
    const a = await client.embeddings.create({ model: 'mock-embed', input: ['one', 'two', 'three'], encoding_format: 'float' });
    const b = await client.embeddings.create({ model: 'mock-embed', input: ['one', 'two', 'three'] });
    assert.equal(a.data.length, 3);
    a.data.forEach((d, i) => {
      assert.equal(d.index, i);
      assert.equal(d.embedding.length, 8);
      d.embedding.forEach((v, j) => assert.ok(Math.abs(v - b.data[i].embedding[j]) < 1e-6));
    });
    assert.ok(a.usage.prompt_tokens > 0);
  });
});
