// Amazon Bedrock behind the unified API: the official OpenAI SDK talks to the gateway, the gateway
// talks to a fake Bedrock Runtime (lib/fake_bedrock.mjs) that checks every SigV4 signature with
// the official AWS signer and answers with the recorded Bedrock fixtures: Converse JSON, and
// ConverseStream as a binary event stream encoded by the official AWS codec.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { BEDROCK_TEXT, BEDROCK_TOOL, cohereTokens, startFakeBedrock } from './lib/fake_bedrock.mjs';
import { serverYaml, startGateway } from './lib/gateway.mjs';

// The public AWS example keys (never real).
const AK = 'AKIDEXAMPLE';
const SK = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
let fake;
let gw;
let client;

before(async () => {
  fake = await startFakeBedrock({ accessKeyId: AK, secretAccessKey: SK, region: 'us-west-2' });
  const yaml = serverYaml({ freePrices: false }) + `prices:
  "*": {input: 3, output: 15}
providers:
  - name: bedrock
    type: bedrock
    region: us-west-2
    endpoint: ${fake.url}
    access_key_id: ${AK}
    secret_access_key: "${SK}"
    proxy: none
  - name: bedrock-wrong-secret
    type: bedrock
    region: us-west-2
    endpoint: ${fake.url}
    access_key_id: ${AK}
    secret_access_key: not-the-secret
    proxy: none
  - {name: mock, type: mock}
models:
  - {name: claude, provider: bedrock, upstream_model: "anthropic.claude-3-haiku-20240307-v1:0"}
  - {name: claude-or-mock, provider: bedrock, upstream_model: "anthropic.claude-3-haiku-20240307-v1:0", fallbacks: [{provider: mock}]}
  - {name: claude-tools, provider: bedrock, upstream_model: "anthropic.claude-tool-v1:0"}
  - {name: profile-arn, provider: bedrock, upstream_model: "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"}
  - {name: throttled, provider: bedrock, upstream_model: throttled}
  - {name: invalid, provider: bedrock, upstream_model: invalid}
  - {name: stream-throttled, provider: bedrock, upstream_model: stream-throttled}
  - {name: stream-cut, provider: bedrock, upstream_model: stream-cut}
  - {name: badsig, provider: bedrock-wrong-secret, upstream_model: "anthropic.claude-3-haiku-20240307-v1:0"}
  - {name: titan, provider: bedrock, upstream_model: "amazon.titan-embed-text-v2:0"}
  - {name: cohere, provider: bedrock, upstream_model: "cohere.embed-english-v3"}
`;
  gw = await startGateway(yaml);
  client = new OpenAI({ apiKey: 'unused', baseURL: gw.baseURL, maxRetries: 0 });
});

after(async () => {
  // The fake must close even when the gateway's exit is wrong, or this file never ends.
  try {
    await gw?.stopClean();
  } finally {
    await fake?.close();
  }
});

const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'How many rs are in strawberry?' }];
const fixtureText = BEDROCK_TEXT.body.output.message.content.map((b) => b.text ?? '').join('');

describe('bedrock', () => {
  test('Converse: signed request (model id with ":" encoded twice in the canonical URI), translated both ways', async () => {
    const r = await client.chat.completions.create({ model: 'claude', messages: msgs, max_tokens: 100, temperature: 0.2, stop: ['END'] });
    const sent = fake.requests.at(-1);
    assert.equal(sent.signatureError, undefined, 'the official AWS signer accepts our signature');
    assert.equal(sent.path, '/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse');
    assert.deepEqual(sent.body.system, [{ text: 'Be brief.' }]);
    assert.deepEqual(sent.body.messages, [{ role: 'user', content: [{ text: 'How many rs are in strawberry?' }] }]);
    assert.deepEqual(sent.body.inferenceConfig, { maxTokens: 100, temperature: 0.2, stopSequences: ['END'] });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, 'claude');
    assert.equal(r.choices[0].message.content, fixtureText);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.usage.prompt_tokens, BEDROCK_TEXT.body.usage.inputTokens);
    assert.equal(r.usage.completion_tokens, BEDROCK_TEXT.body.usage.outputTokens);
  });

  test('an inference-profile ARN as the model id is signed and routed', async () => {
    await client.chat.completions.create({ model: 'profile-arn', messages: msgs });
    const sent = fake.requests.at(-1);
    assert.equal(sent.signatureError, undefined);
    assert.match(sent.path, /^\/model\/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus\.anthropic/);
  });

  test('ConverseStream: the binary event stream becomes OpenAI chunks, usage when asked', async () => {
    const chunks = [];
    const s = await client.chat.completions.create({ model: 'claude', messages: msgs, stream: true, stream_options: { include_usage: true } });
    for await (const c of s) chunks.push(c);
    const sent = fake.requests.at(-1);
    assert.equal(sent.signatureError, undefined);
    assert.equal(sent.path, '/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    const streamed = BEDROCK_TEXT.events.map((e) => e.contentBlockDelta?.delta?.text ?? '').join('');
    assert.equal(text, streamed);
    assert.equal(chunks.find((c) => c.choices?.[0]?.finish_reason)?.choices[0].finish_reason, 'stop');
    const usage = chunks.at(-1).usage;
    const meta = BEDROCK_TEXT.events.find((e) => e.metadata).metadata.usage;
    assert.equal(usage.prompt_tokens, meta.inputTokens);
    assert.equal(usage.completion_tokens, meta.outputTokens);
  });

  test('tool calls: tools translated out, toolUse translated back (whole and streamed)', async () => {
    const tools = [{ type: 'function', function: { name: 'weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const r = await client.chat.completions.create({ model: 'claude-tools', messages: msgs, tools, tool_choice: 'auto' });
    const sent = fake.requests.at(-1);
    assert.equal(sent.body.toolConfig.tools[0].toolSpec.name, 'weather');
    assert.deepEqual(sent.body.toolConfig.toolChoice, { auto: {} });
    const tu = BEDROCK_TOOL.body.output.message.content.find((b) => b.toolUse).toolUse;
    const call = r.choices[0].message.tool_calls[0];
    assert.equal(call.id, tu.toolUseId);
    assert.equal(call.function.name, tu.name);
    assert.deepEqual(JSON.parse(call.function.arguments), tu.input);
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    const chunks = [];
    for await (const c of await client.chat.completions.create({ model: 'claude-tools', messages: msgs, tools, stream: true })) chunks.push(c);
    const args = chunks.flatMap((c) => c.choices?.[0]?.delta?.tool_calls ?? []).map((t) => t.function?.arguments ?? '').join('');
    assert.ok(args.length > 0);
    JSON.parse(args);
  });

  test('errors: throttling 429 RateLimitError, validation 400, a wrong secret is refused upstream', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'throttled', messages: msgs }), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, e.constructor.name);
      assert.match(e.message, /Too many requests/);
      // Bedrock sends no Retry-After with a ThrottlingException: the gateway's 429 has one.
      assert.equal(e.headers.get('retry-after'), '1');
      return true;
    });
    await assert.rejects(client.chat.completions.create({ model: 'invalid', messages: msgs }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.match(e.message, /Malformed input request/);
      return true;
    });
    await assert.rejects(client.chat.completions.create({ model: 'badsig', messages: msgs }), (e) => {
      // The gateway's credentials are wrong, not the caller's request: 502, not 403, and none of
      // Bedrock's text (which can quote the signed request) passed on.
      assert.equal(e.status, 502);
      assert.equal(e.code, 'upstream_authentication_failed');
      assert.match(e.message, /refused the gateway's AWS credentials/);
      assert.ok(!JSON.stringify(e.error ?? {}).includes('not-the-secret'));
      return true;
    });
    assert.ok(fake.requests.at(-1).signatureError, 'the fake noticed the wrong signature');
  });

  test('a stream exception (throttlingException) ends the stream with an OpenAI error event', async () => {
    const r = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stream-throttled', messages: msgs, stream: true }) });
    const text = await r.text();
    assert.equal(r.status, 200);
    const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
    assert.equal(events.at(-1), '[DONE]');
    const err = JSON.parse(events.at(-2));
    assert.equal(err.error.type, 'rate_limit_error');
    assert.match(err.error.message, /Too many tokens/);
  });

  test('a stream closed cleanly before its messageStop ends with an error event, not as a success', async () => {
    const r = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stream-cut', messages: msgs, stream: true }) });
    const text = await r.text();
    assert.equal(r.status, 200);
    assert.match(text, /event: error\ndata: .*messageStop/);
    assert.ok(!/"finish_reason":"(stop|length)"/.test(text), text);
  });

  test('a request Bedrock cannot take is refused before it is sent (400 with the param)', async () => {
    const before = fake.requests.length;
    await assert.rejects(client.chat.completions.create({ model: 'claude', messages: msgs, n: 2 }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.equal(e.param, 'n');
      return true;
    });
    assert.equal(fake.requests.length, before);
  });

  test('a request Bedrock cannot take goes to the route\'s next target, which can', async () => {
    // A refusal says this target cannot serve the request, not that nothing can.
    const before = fake.requests.length;
    const r = await client.chat.completions.create({ model: 'claude-or-mock', messages: msgs, n: 2 });
    assert.equal(r.object, 'chat.completion');
    assert.ok(r.choices[0].message.content.length > 0);
    assert.equal(fake.requests.length, before, 'Bedrock was not called');
    const line = await gw.waitForLog((l) => l.model === 'claude-or-mock' && l.status === 200);
    assert.equal(line.attempts, 2, JSON.stringify(line));
  });

  test('embeddings through InvokeModel: Titan and Cohere', async () => {
    const t = await client.embeddings.create({ model: 'titan', input: 'hello' });
    assert.deepEqual(t.data[0].embedding, [0.125, -0.25, 0.5, 0.75]);
    assert.equal(t.usage.prompt_tokens, 5);
    assert.equal(fake.requests.at(-1).body.inputText, 'hello');
    const c = await client.embeddings.create({ model: 'cohere', input: ['a', 'b'] });
    assert.equal(c.data.length, 2);
    assert.deepEqual(fake.requests.at(-1).body.texts, ['a', 'b']);
    // Cohere's count comes only in X-Amzn-Bedrock-Input-Token-Count: reported, and billed, as given.
    assert.equal(c.usage.prompt_tokens, cohereTokens(['a', 'b']));
    const line = await gw.waitForLog((l) => l.model === 'cohere');
    assert.equal(line.usage_source, 'provider');
    assert.equal(line.prompt_tokens, cohereTokens(['a', 'b']));
  });

  test('no secret, token or signature in any log line or audit record', () => {
    const audit = gw.ready.audit_dir;
    const text = gw.stdout() + gw.stderr() + readdirSync(audit).map((f) => readFileSync(join(audit, f), 'utf8')).join('');
    const secrets = [SK, ...fake.requests.map((r) => /Signature=([0-9a-f]{64})/.exec(r.headers.authorization ?? '')?.[1]).filter(Boolean)];
    assert.ok(secrets.length > 1);
    for (const s of secrets) assert.ok(!text.includes(s), `leaked: ${s.slice(0, 8)}`);
  });
});
