// Azure OpenAI behind the unified API: the official OpenAI SDK talks to the gateway, the gateway
// talks to a fake Azure resource that speaks Azure's wire format (lib/fake_azure.mjs, replaying a
// real recorded Azure stream): deployment URLs with api-version, the v1 API, the api-key header,
// the content-filter annotations, and Azure's error bodies as the SDK's typed errors.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { AZURE_STREAM_TEXT, AZURE_STREAM_USAGE, startFakeAzure } from './lib/fake_azure.mjs';
import { auditRecords, eventually, serverYaml, startGateway } from './lib/gateway.mjs';

const KEY = 'azure-test-key-0123456789abcdef';
const ENTRA = { tenantId: 'contoso-tenant', clientId: 'tollgate-client', clientSecret: 'entra-secret-value-42' };
let azure;
let gw;
let client;

before(async () => {
  azure = await startFakeAzure({ apiKey: KEY, entra: ENTRA });
  const yaml = serverYaml() + `providers:
  - name: azure-dated
    type: azure_openai
    endpoint: ${azure.url}
    api_key: ${KEY}
    proxy: none
  - name: azure-v1
    type: azure_openai
    endpoint: ${azure.url}
    api_key: ${KEY}
    api_version: v1
    proxy: none
  - name: azure-entra
    type: azure_openai
    endpoint: ${azure.url}
    entra: {tenant_id: ${ENTRA.tenantId}, client_id: ${ENTRA.clientId}, client_secret: ${ENTRA.clientSecret}, authority: "${azure.url}"}
    proxy: none
  - name: azure-entra-bad
    type: azure_openai
    endpoint: ${azure.url}
    entra: {tenant_id: ${ENTRA.tenantId}, client_id: ${ENTRA.clientId}, client_secret: wrong-secret, authority: "${azure.url}"}
    proxy: none
  - name: azure-2024-06
    type: azure_openai
    endpoint: ${azure.url}
    api_key: ${KEY}
    api_version: 2024-06-01
    proxy: none
  - name: azure-badkey
    type: azure_openai
    endpoint: ${azure.url}
    api_key: wrong-key
    proxy: none
models:
  - {name: gpt-az, provider: azure-dated, upstream_model: prod-gpt5-nano}
  - {name: gpt-az-v1, provider: azure-v1, upstream_model: prod-gpt5-nano}
  - {name: gpt-az-filtered, provider: azure-dated, upstream_model: prompt-filtered}
  - {name: gpt-az-throttled, provider: azure-dated, upstream_model: throttled}
  - {name: gpt-az-outfilter, provider: azure-dated, upstream_model: output-filtered}
  - {name: gpt-az-old, provider: azure-2024-06, upstream_model: prod-gpt5-nano}
  - {name: gpt-az-badkey, provider: azure-badkey, upstream_model: prod-gpt5-nano}
  - {name: embed-az, provider: azure-dated, upstream_model: emb-small}
  - {name: gpt-az-entra, provider: azure-entra, upstream_model: prod-gpt5-nano}
  - {name: gpt-az-entra-bad, provider: azure-entra-bad, upstream_model: prod-gpt5-nano}
`;
  gw = await startGateway(yaml);
  client = new OpenAI({ apiKey: 'unused', baseURL: gw.baseURL, maxRetries: 0 });
});

after(async () => {
  // The fake must close even when the gateway's exit is wrong, or this file never ends.
  try {
    await gw?.stopClean();
  } finally {
    await azure?.close();
  }
});

const msgs = [{ role: 'user', content: 'What is the capital of France?' }];
/** The last API request (the Entra token requests run in the background beside them). */
const lastApi = () => azure.requests.filter((r) => !r.form).at(-1);

describe('azure_openai', () => {
  test('dated API: deployment URL with api-version, api-key header, annotations passed through, usage read', async () => {
    const r = await client.chat.completions.create({ model: 'gpt-az', messages: msgs });
    assert.equal(r.choices[0].message.content, AZURE_STREAM_TEXT);
    assert.deepEqual(r.usage.completion_tokens, AZURE_STREAM_USAGE.completion_tokens);
    assert.ok(Array.isArray(r.prompt_filter_results), 'Azure annotations reach the caller');
    const sent = lastApi();
    assert.equal(sent.pathname, '/openai/deployments/prod-gpt5-nano/chat/completions');
    assert.equal(sent.query['api-version'], '2024-10-21');
    assert.equal(sent.headers['api-key'], KEY);
    assert.equal(sent.headers.authorization, undefined, 'no Authorization header to Azure');
    assert.equal(sent.body.model, 'prod-gpt5-nano');
  });

  test('v1 API: /openai/v1/ path, deployment as model, no api-version', async () => {
    const r = await client.chat.completions.create({ model: 'gpt-az-v1', messages: msgs });
    assert.equal(r.choices[0].message.content, AZURE_STREAM_TEXT);
    const sent = lastApi();
    assert.equal(sent.pathname, '/openai/v1/chat/completions');
    assert.equal(sent.query['api-version'], undefined);
    assert.equal(sent.body.model, 'prod-gpt5-nano');
  });

  test('stream: the first chunk with empty choices, content-filter results, usage when asked', async () => {
    const chunks = [];
    const s = await client.chat.completions.create({ model: 'gpt-az', messages: msgs, stream: true, stream_options: { include_usage: true } });
    for await (const c of s) chunks.push(c);
    assert.deepEqual(chunks[0].choices, [], 'Azure first chunk: empty choices');
    assert.ok(chunks[0].prompt_filter_results);
    const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(text, AZURE_STREAM_TEXT);
    assert.ok(chunks.some((c) => c.choices?.[0]?.content_filter_results), 'per-choice content_filter_results');
    assert.equal(chunks.at(-1).usage.completion_tokens, AZURE_STREAM_USAGE.completion_tokens);
    // The gateway always asks Azure for usage, and hides it from a caller that did not ask.
    assert.equal(lastApi().body.stream_options.include_usage, true);
    const quiet = [];
    for await (const c of await client.chat.completions.create({ model: 'gpt-az', messages: msgs, stream: true })) quiet.push(c);
    assert.ok(quiet.every((c) => !c.usage), 'no usage chunk for a caller that did not ask');
    assert.equal(lastApi().body.stream_options.include_usage, true);
  });

  test('an api-version older than 2024-09-01-preview: streams go without stream_options and are billed from counted output', async () => {
    // Azure refuses stream_options there (the fake answers its 400): the caller's own
    // include_usage is left out too, and the stream's completion is counted from its chunks.
    const chunks = [];
    const s = await client.chat.completions.create({ model: 'gpt-az-old', messages: msgs, stream: true, stream_options: { include_usage: true } });
    for await (const c of s) chunks.push(c);
    assert.equal(chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join(''), AZURE_STREAM_TEXT);
    const sent = lastApi();
    assert.equal(sent.query['api-version'], '2024-06-01');
    assert.equal('stream_options' in sent.body, false, 'no stream_options to an old api-version');
    const record = await eventually(() => auditRecords(gw.ready.audit_dir).find((r) => r.type === 'call' && r.model === 'gpt-az-old' && r.stream));
    assert.equal(record.status, 200);
    assert.equal(record.usage_reported, false);
    assert.ok(record.completion_tokens > 0, `counted output billed: ${JSON.stringify(record)}`);
    // Whole answers carry usage at every version.
    const whole = await client.chat.completions.create({ model: 'gpt-az-old', messages: msgs });
    assert.equal(whole.usage.completion_tokens, AZURE_STREAM_USAGE.completion_tokens);
  });

  test('output filtered mid-stream: finish_reason content_filter reaches the caller', async () => {
    const chunks = [];
    for await (const c of await client.chat.completions.create({ model: 'gpt-az-outfilter', messages: msgs, stream: true })) chunks.push(c);
    assert.equal(chunks.find((c) => c.choices?.[0]?.finish_reason)?.choices[0].finish_reason, 'content_filter');
  });

  test('prompt filtered: 400 content_filter as BadRequestError with param prompt', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-az-filtered', messages: msgs }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'content_filter');
      assert.equal(e.param, 'prompt');
      assert.match(e.message, /content management policy/);
      assert.equal(typeof e.error.type, 'string', 'a null type becomes a string');
      return true;
    });
  });

  test('throttled: 429 with code "429" as RateLimitError; Retry-After passed on', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-az-throttled', messages: msgs }), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, e.constructor.name);
      assert.equal(e.code, '429');
      const ra = typeof e.headers?.get === 'function' ? e.headers.get('retry-after') : e.headers?.['retry-after'];
      assert.equal(ra, '6');
      assert.match(e.message, /exceeded token rate limit/);
      return true;
    });
  });

  test('a wrong key: Azure 401 becomes 502 upstream_authentication_failed (the caller\'s key is fine), and the key is in no answer', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-az-badkey', messages: msgs }), (e) => {
      assert.ok(e instanceof OpenAI.InternalServerError, e.constructor.name);
      assert.equal(e.status, 502);
      assert.equal(e.code, 'upstream_authentication_failed');
      assert.ok(!JSON.stringify(e.error).includes(KEY));
      return true;
    });
  });

  test('embeddings through a deployment', async () => {
    const r = await client.embeddings.create({ model: 'embed-az', input: 'hello' });
    assert.ok(r.data[0].embedding.length > 0);
    assert.equal(lastApi().pathname, '/openai/deployments/emb-small/embeddings');
  });

  test('Entra ID: a client-credentials token fetched in the background, sent as a bearer token', async () => {
    await eventually(() => azure.tokens.size > 0, { timeoutMs: 10000, what: 'an Entra token issued to the gateway' });
    const tokenReq = azure.requests.find((r) => r.form?.client_secret === ENTRA.clientSecret);
    assert.deepEqual([tokenReq.form.grant_type, tokenReq.form.scope], ['client_credentials', 'https://cognitiveservices.azure.com/.default']);
    const r = await client.chat.completions.create({ model: 'gpt-az-entra', messages: msgs });
    assert.equal(r.choices[0].message.content, AZURE_STREAM_TEXT);
    const sent = lastApi();
    assert.ok(azure.tokens.has(sent.headers.authorization.slice(7)));
    assert.equal(sent.headers['api-key'], undefined);
  });

  test('a config reload keeps the Entra token: the next call needs no new token request', async () => {
    await eventually(() => azure.tokens.size > 0, { timeoutMs: 10000, what: 'an Entra token issued to the gateway' });
    const tokenRequests = () => azure.requests.filter((r) => r.form?.client_secret === ENTRA.clientSecret).length;
    const before = tokenRequests();
    const from = gw.stderr().length;
    gw.signal('SIGHUP');
    await gw.waitForStderr(/config reloaded/, 5000, from);
    const r = await client.chat.completions.create({ model: 'gpt-az-entra', messages: msgs });
    assert.equal(r.choices[0].message.content, AZURE_STREAM_TEXT);
    assert.equal(tokenRequests(), before, 'the new snapshot shares the live token source');
  });

  test('Entra ID with a wrong client secret: 502 naming the Entra error, never the secret', async () => {
    await eventually(() => azure.requests.some((r) => r.form?.client_secret === 'wrong-secret'), { timeoutMs: 10000, what: 'the failed token request' });
    await assert.rejects(client.chat.completions.create({ model: 'gpt-az-entra-bad', messages: msgs }), (e) => {
      assert.equal(e.status, 502);
      assert.match(e.message, /invalid_client|AADSTS7000215/);
      assert.ok(!e.message.includes('wrong-secret'));
      return true;
    });
  });

  test('no key, client secret or token in any log line or audit record', () => {
    const audit = gw.ready.audit_dir;
    const text = gw.stdout() + gw.stderr() + readdirSync(audit).map((f) => readFileSync(join(audit, f), 'utf8')).join('');
    for (const secret of [KEY, ENTRA.clientSecret, ...azure.tokens]) assert.ok(!text.includes(secret), `a secret leaked: ${secret.slice(0, 6)}`);
  });
});
