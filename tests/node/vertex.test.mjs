// Google Vertex AI (Gemini) behind the unified API: the official OpenAI SDK talks to the gateway;
// the gateway gets an OAuth token by signing the test service account's JWT (checked by the fake
// token endpoint with the account's public key) and calls a fake Vertex that replays recorded
// Gemini answers (lib/fake_vertex.mjs).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { GEMINI_CHUNKS, GEMINI_TEXT, SERVICE_ACCOUNT, startFakeVertex } from './lib/fake_vertex.mjs';
import { eventually, serverYaml, startGateway } from './lib/gateway.mjs';

let fake;
let gw;
let client;
let dir;

before(async () => {
  fake = await startFakeVertex();
  dir = mkdtempSync(join(tmpdir(), 'tollgate-vertex-'));
  // The public test account, its token_uri pointed at the fake.
  const keyFile = join(dir, 'sa.json');
  writeFileSync(keyFile, JSON.stringify({ ...SERVICE_ACCOUNT, token_uri: `${fake.url}/token` }), { mode: 0o600 });
  const yaml = serverYaml() + `providers:
  - name: vertex
    type: vertex
    project: my-project
    location: europe-west4
    endpoint: ${fake.url}
    credentials_file: ${keyFile}
    proxy: none
models:
  - {name: gemini, provider: vertex, upstream_model: gemini-2.5-flash}
  - {name: gemini-quota, provider: vertex, upstream_model: quota-exceeded}
  - {name: vembed, provider: vertex, upstream_model: text-embedding-005}
  - {name: gembed, provider: vertex, upstream_model: gemini-embedding-001}
`;
  gw = await startGateway(yaml);
  client = new OpenAI({ apiKey: 'unused', baseURL: gw.baseURL, maxRetries: 0 });
  // The first token is fetched in the background at start.
  await eventually(() => fake.tokens.size > 0, { timeoutMs: 10000, what: 'a token issued to the gateway' });
});

after(async () => {
  // The fake must close even when the gateway's exit is wrong, or this file never ends.
  try {
    await gw?.stopClean();
  } finally {
    await fake?.close();
  }
  rmSync(dir, { recursive: true, force: true });
});

const msgs = [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'How many rs in strawberry?' }];
const fixtureText = GEMINI_TEXT.candidates[0].content.parts.filter((p) => !p.thought).map((p) => p.text ?? '').join('');

describe('vertex', () => {
  test('the token comes from a JWT signed with the service account key (verified by the fake)', () => {
    const t = fake.requests.find((r) => r.pathname === '/token' && r.jwt);
    assert.ok(t, 'a verified token request');
    assert.equal(t.jwt.claims.iss, SERVICE_ACCOUNT.client_email);
    assert.equal(t.jwt.header.kid, SERVICE_ACCOUNT.private_key_id);
  });

  test('generateContent: regional path, bearer token, translated both ways', async () => {
    const r = await client.chat.completions.create({ model: 'gemini', messages: msgs, max_tokens: 50, temperature: 0.1 });
    const sent = fake.requests.at(-1);
    assert.equal(sent.pathname, '/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent');
    assert.ok(fake.tokens.has(sent.headers.authorization.slice(7)));
    assert.deepEqual(sent.body.systemInstruction, { parts: [{ text: 'Answer briefly.' }] });
    assert.equal(sent.body.contents[0].role, 'user');
    assert.equal(sent.body.generationConfig.maxOutputTokens, 50);
    assert.equal(r.choices[0].message.content, fixtureText);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.usage.prompt_tokens, GEMINI_TEXT.usageMetadata.promptTokenCount);
  });

  test('streamGenerateContent?alt=sse: chunks translated, usage at the end when asked', async () => {
    const chunks = [];
    for await (const c of await client.chat.completions.create({ model: 'gemini', messages: msgs, stream: true, stream_options: { include_usage: true } })) chunks.push(c);
    const sent = fake.requests.at(-1);
    assert.equal(sent.query.alt, 'sse');
    assert.match(sent.pathname, /:streamGenerateContent$/);
    const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    const want = GEMINI_CHUNKS.map((c) => (c.candidates?.[0]?.content?.parts ?? []).filter((p) => !p.thought).map((p) => p.text ?? '').join('')).join('');
    assert.equal(text, want);
    assert.equal(chunks.find((c) => c.choices?.[0]?.finish_reason)?.choices[0].finish_reason, 'stop');
    assert.equal(chunks.at(-1).usage.prompt_tokens, GEMINI_CHUNKS.at(-1).usageMetadata.promptTokenCount);
  });

  test('RESOURCE_EXHAUSTED: 429 RateLimitError with Google\'s message', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gemini-quota', messages: msgs }), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, e.constructor.name);
      assert.match(e.message, /exceeded your current quota/);
      // Google's RetryInfo (retryDelay "34.4s" in the recorded answer), rounded up.
      assert.equal(e.headers.get('retry-after'), '35');
      return true;
    });
  });

  test('embeddings through :predict', async () => {
    const r = await client.embeddings.create({ model: 'vembed', input: 'hello', encoding_format: 'float' });
    assert.equal(fake.requests.at(-1).method, 'predict');
    assert.deepEqual(fake.requests.at(-1).body.instances, [{ content: 'hello' }]);
    assert.ok(r.data[0].embedding.length > 0);
    // Several inputs go in one call to the text-embedding models...
    const two = await client.embeddings.create({ model: 'vembed', input: ['a', 'b'], encoding_format: 'float' });
    assert.equal(two.data.length, 2);
    assert.equal(fake.requests.at(-1).body.instances.length, 2);
    // ...but gemini-embedding models take one per call: refused with the param, nothing sent.
    const sent = fake.requests.length;
    const err = await client.embeddings.create({ model: 'gembed', input: ['a', 'b'], encoding_format: 'float' }).catch((e) => e);
    assert.equal(err.status, 400, String(err));
    assert.equal(err.param, 'input');
    assert.match(err.message, /at most 1 input/);
    assert.equal(fake.requests.length, sent);
    const one = await client.embeddings.create({ model: 'gembed', input: ['a'], encoding_format: 'float' });
    assert.equal(one.data.length, 1);
  });

  test('a token Vertex refuses (401): 502 upstream_authentication_failed, then a new token is fetched at once', { timeout: 30000 }, async () => {
    fake.tokens.clear(); // Vertex no longer accepts the gateway's token
    const err = await client.chat.completions.create({ model: 'gemini', messages: msgs }).catch((e) => e);
    assert.equal(err.status, 502, String(err));
    assert.equal(err.code, 'upstream_authentication_failed');
    assert.ok(!/invalid authentication credentials/.test(err.message), err.message);
    // The refused token is dropped and another fetched (a token younger than 10 s is kept: the
    // 401s of calls sent with the one before must not throw it away), not at its scheduled
    // refresh an hour on.
    const ok = await eventually(async () => {
      const r = await client.chat.completions.create({ model: 'gemini', messages: msgs }).catch(() => undefined);
      return r;
    }, { timeoutMs: 20000, what: 'a call that succeeds with a new token' });
    assert.equal(ok.choices[0].message.content, fixtureText);
    assert.equal(fake.tokens.size, 1);
  });

  test('no secret, token or signature in any log line or audit record', () => {
    const audit = gw.ready.audit_dir;
    const text = gw.stdout() + gw.stderr() + readdirSync(audit).map((f) => readFileSync(join(audit, f), 'utf8')).join('');
    const secrets = [...fake.tokens, ...fake.requests.map((r) => r.assertion).filter(Boolean), SERVICE_ACCOUNT.private_key.split('\n')[5]];
    assert.ok(secrets.length > 1);
    for (const s of secrets) assert.ok(!text.includes(s), `leaked: ${s.slice(0, 8)}`);
  });
});
