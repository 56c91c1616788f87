// Hostile and malformed input. One gateway with ONE worker: while every bad client below is being
// handled, a well-behaved prober keeps getting 200s from the same gateway, which proves that no
// bad client blocks the worker.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { assertOpenAIError, delay, fetchT, httpRequest, postJson, rawExchange, serverYaml, startGateway } from './lib/gateway.mjs';

const MAX_BODY = 65536;
let gw;

const CONFIG =
  serverYaml({ workers: 1, limits: { max_body_bytes: MAX_BODY }, timeouts: { header_read_ms: 1500, body_read_ms: 1500 } }) +
  `providers:
  - name: mock
    type: mock
models:
  - name: mock-gpt
    provider: mock
`;

const GOOD = JSON.stringify({ model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });

// ---------------------------------------------------------------------------------------------
// The prober: a well-behaved client running for the whole file.

const probes = []; // {start, end, ok, status, error}
let probing = true;
let prober;

async function probeOnce(i) {
  const start = Date.now();
  try {
    let status;
    if (i % 2 === 0) {
      // new connection each time: accepting must not be blocked either
      const r = await httpRequest(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(GOOD) },
        body: GOOD,
        timeoutMs: 1000,
      });
      status = r.status;
    } else {
      const r = await fetchT(`${gw.url}/healthz`, {}, 1000);
      await r.arrayBuffer();
      status = r.status;
    }
    probes.push({ start, end: Date.now(), ok: status === 200, status });
  } catch (e) {
    probes.push({ start, end: Date.now(), ok: false, error: String(e) });
  }
}

async function runProber() {
  for (let i = 0; probing; i++) {
    await probeOnce(i);
    await delay(50); // pacing of a polite client
  }
}

/** Waits (bounded) for a successful probe that started at or after `t`. */
async function probeSucceededSince(t, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (probes.some((p) => p.start >= t && p.ok)) return;
    await delay(25);
  }
  assert.fail(`no successful probe since ${new Date(t).toISOString()}; last probes: ${JSON.stringify(probes.slice(-5))}`);
}

function assertNoFailedProbes() {
  const bad = probes.filter((p) => !p.ok);
  assert.deepEqual(bad, [], 'a well-behaved client failed while bad clients were being handled');
}

/** Runs `fn` and checks that the prober kept succeeding while and after it ran. */
async function whileProbing(fn) {
  const t = Date.now();
  const r = await fn();
  await probeSucceededSince(t);
  assertNoFailedProbes();
  return r;
}

before(async () => {
  gw = await startGateway(CONFIG);
  prober = runProber();
  await probeSucceededSince(0);
});

after(async () => {
  probing = false;
  await prober;
  try {
    if (gw?.alive) await gw.stopClean();
  } finally {
    await gw?.kill();
  }
});

const chatUrl = () => `${gw.url}/v1/chat/completions`;

function head(lines) {
  return lines.join('\r\n') + '\r\n\r\n';
}

/** Asserts a raw answer: status, closed connection, and (when there is a body) the error code. */
function assertRejected(res, status, code, { mustClose = true } = {}) {
  const r = res.response;
  assert.ok(r, `no HTTP response at all (closed=${res.closed}, reset=${res.reset}, bytes=${res.data.length})`);
  assert.equal(r.status, status, res.text.slice(0, 500));
  if (r.text) {
    assert.ok(r.json?.error, `error body expected: ${r.text.slice(0, 300)}`);
    assert.equal(r.json.error.code, code);
  }
  if (mustClose) assert.ok(res.closed, 'the gateway must close the connection');
}

describe('malformed JSON and wrong field types', () => {
  test('body that is not JSON → 400 invalid_json', async () => {
    await whileProbing(async () => {
      assertOpenAIError(await postJson(chatUrl(), '{"model": "mock-gpt", "messages": ['), { status: 400, code: 'invalid_json' });
      assertOpenAIError(await postJson(chatUrl(), '[1, 2, 3]'), { status: 400, code: 'invalid_json' });
      assertOpenAIError(await postJson(chatUrl(), '"just a string"'), { status: 400, code: 'invalid_json' });
    });
  });

  test('wrong types → 400 invalid_type naming the field', async () => {
    const cases = [
      [{ model: 'mock-gpt', messages: 'hello' }, 'messages'],
      [{ model: 5, messages: [{ role: 'user', content: 'x' }] }, 'model'],
      [{ model: 'mock-gpt', messages: [{ role: 'user', content: 'x' }], stream: 'yes' }, 'stream'],
    ];
    for (const [body, param] of cases) {
      assertOpenAIError(await postJson(chatUrl(), body), { status: 400, code: 'invalid_type', param });
    }
  });

  test('missing model / messages → 400 missing_required_parameter naming the field', async () => {
    assertOpenAIError(await postJson(chatUrl(), { messages: [{ role: 'user', content: 'x' }] }), {
      status: 400,
      code: 'missing_required_parameter',
      param: 'model',
    });
    assertOpenAIError(await postJson(chatUrl(), { model: 'mock-gpt' }), {
      status: 400,
      code: 'missing_required_parameter',
      param: 'messages',
    });
    assertOpenAIError(await postJson(`${gw.url}/v1/embeddings`, { model: 'mock-gpt' }), {
      status: 400,
      code: 'missing_required_parameter',
      param: 'input',
    });
  });
});

describe('HTTP-level limits and routing', () => {
  test('body over max_body_bytes via Content-Length → 413, closed', async () => {
    const res = await whileProbing(() =>
      rawExchange(gw.port, [
        head(['POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json', `Content-Length: ${MAX_BODY * 4}`]),
        '{"model":"mock-gpt","messages":[{"role":"user","content":"' + 'a'.repeat(1000),
      ], { timeoutMs: 4000 }),
    );
    assertRejected(res, 413, 'request_too_large');
  });

  test('body over max_body_bytes via chunked → 413, closed', async () => {
    const piece = 'a'.repeat(16384);
    const parts = [
      head(['POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json', 'Transfer-Encoding: chunked']),
    ];
    for (let i = 0; i < 6; i++) parts.push(`${piece.length.toString(16)}\r\n${piece}\r\n`);
    parts.push('0\r\n\r\n');
    const res = await whileProbing(() => rawExchange(gw.port, parts, { timeoutMs: 4000 }));
    assertRejected(res, 413, 'request_too_large');
  });

  test('chunk extensions or a trailer section beyond the read buffer → 400, closed (memory stays bounded)', async () => {
    // Beast bounds neither a chunk-size line nor the trailers: before any key was checked, a
    // caller could make one connection buffer hundreds of megabytes.
    const body = '{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}';
    const chunked = ['POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json', 'Transfer-Encoding: chunked'];
    const longExtension = [head(chunked), `${body.length.toString(16)};x=${'a'.repeat(512 * 1024)}\r\n${body}\r\n0\r\n\r\n`];
    const longTrailer = [head(chunked), `${body.length.toString(16)}\r\n${body}\r\n0\r\n`,
      ...Array.from({ length: 64 }, (_, i) => `X-Pad-${i}: ${'b'.repeat(8192)}\r\n`), '\r\n'];
    for (const parts of [longExtension, longTrailer]) {
      const res = await whileProbing(() => rawExchange(gw.port, parts, { timeoutMs: 4000 }));
      assertRejected(res, 400, 'bad_request');
      assert.match(res.text, /chunk-size line or the trailer section is too long/);
    }
  });

  test('Expect: 100-continue: the interim answer only for a body that can be taken, and never to HTTP/1.0', async () => {
    const body = '{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}';
    const expectHead = (version, length) => head([`POST /v1/chat/completions HTTP/${version}`, 'Host: t', 'Content-Type: application/json',
      `Content-Length: ${length}`, 'Expect: 100-continue', 'Connection: close']);
    const text = (res) => res.data.toString('latin1');
    const fits = await rawExchange(gw.port, [expectHead('1.1', body.length), { data: body, delayMs: 300 }], { timeoutMs: 4000 });
    assert.match(text(fits), /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, text(fits).slice(0, 120));
    // A body over max_body_bytes: the 413 at once, no invitation to start sending it.
    const tooLarge = await rawExchange(gw.port, [expectHead('1.1', 999999999)], { timeoutMs: 4000 });
    assert.match(text(tooLarge), /^HTTP\/1\.1 413 /, text(tooLarge).slice(0, 120));
    const old = await rawExchange(gw.port, [expectHead('1.0', body.length), { data: body, delayMs: 300 }], { timeoutMs: 4000 });
    assert.doesNotMatch(text(old), /^HTTP\/1\.1 100/, 'no 1xx to an HTTP/1.0 client');
    assert.match(text(old), /^HTTP\/1\.[01] 200 /, text(old).slice(0, 120));
  });

  test('a refused upload is drained, not reset: the caller still sending after its 413 sees a clean close', async () => {
    // Closing a socket with unread bytes makes the kernel reset the connection, and a reset can
    // discard the 413 before the caller reads it. The gateway half-closes and reads on instead.
    const piece = 'a'.repeat(16384);
    const out = await new Promise((resolve) => {
      const r = { data: '', fin: false, error: undefined, closed: false };
      const sock = net.connect({ port: gw.port, host: '127.0.0.1', allowHalfOpen: true });
      sock.on('data', (d) => (r.data += d.toString('latin1')));
      sock.on('error', (e) => (r.error = e.code));
      sock.on('close', () => {
        r.closed = true;
        resolve(r);
      });
      sock.on('end', async () => {
        // The gateway answered and half-closed: keep sending, as a client mid-upload would.
        r.fin = true;
        for (let i = 0; i < 8 && !r.error; i++) {
          sock.write(`${piece.length.toString(16)}\r\n${piece}\r\n`);
          await delay(25);
        }
        await delay(200);  // a reset, if any, has arrived by now
        sock.end();
      });
      sock.write('POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
      for (let i = 0; i < 6; i++) sock.write(`${piece.length.toString(16)}\r\n${piece}\r\n`);
      setTimeout(() => sock.destroy(), 6000);
    });
    assert.match(out.data, /^HTTP\/1\.1 413 /, `answer: ${out.data.slice(0, 120)}`);
    assert.ok(out.fin, 'the gateway did not half-close after its answer');
    assert.equal(out.error, undefined, `the connection was reset after the 413 (${out.error})`);
    assert.ok(out.closed);
  });

  test('a body just under the limit is accepted (limit is not off by a lot)', async () => {
    const filler = 'b'.repeat(MAX_BODY - 200);
    const r = await postJson(chatUrl(), { model: 'mock-gpt', messages: [{ role: 'user', content: filler }], max_tokens: 1 });
    assert.equal(r.status, 200, r.text.slice(0, 300));
  });

  test('too many header fields → 431', async () => {
    const lines = ['GET /v1/models HTTP/1.1', 'Host: t'];
    for (let i = 0; i < 150; i++) lines.push(`X-Filler-${i}: v`);
    const res = await whileProbing(() => rawExchange(gw.port, head(lines), { timeoutMs: 4000, stopWhenComplete: true }));
    assertRejected(res, 431, 'request_header_fields_too_large', { mustClose: false });
  });

  test('header block over max_header_bytes → 431', async () => {
    const res = await whileProbing(() =>
      rawExchange(gw.port, head(['GET /v1/models HTTP/1.1', 'Host: t', `X-Big: ${'z'.repeat(20000)}`]), {
        timeoutMs: 4000,
        stopWhenComplete: true,
      }),
    );
    assertRejected(res, 431, 'request_header_fields_too_large', { mustClose: false });
  });

  test('request target over max_url_bytes → 414', async () => {
    const res = await whileProbing(() =>
      rawExchange(gw.port, head([`GET /v1/models?q=${'u'.repeat(9000)} HTTP/1.1`, 'Host: t']), { timeoutMs: 4000, stopWhenComplete: true }),
    );
    assertRejected(res, 414, 'uri_too_long', { mustClose: false });
  });

  test('a credential header sent twice → 400 bad_request and a close, whichever copy would win', async () => {
    // A hop in front may have checked the other copy: the gateway picks none of them.
    for (const pair of [
      ['Authorization: Bearer tg_aaaaaaaaaaaa_one', 'Authorization: Bearer tg_bbbbbbbbbbbb_two'],
      ['api-key: k', 'API-KEY: k'],
      ['x-api-key: one', 'X-Api-Key: two'],
    ]) {
      const res = await whileProbing(() =>
        rawExchange(gw.port, head(['GET /v1/models HTTP/1.1', 'Host: t', ...pair]), { timeoutMs: 4000, stopWhenComplete: true }),
      );
      assertRejected(res, 400, 'bad_request');
      assert.match(res.response.json.error.message, /more than once/);
    }
    // Two different Tollgate keys in two headers: an ingress metering one header would see
    // another caller than the one billed.
    const two = await whileProbing(() =>
      rawExchange(gw.port, head(['GET /v1/models HTTP/1.1', 'Host: t', 'Authorization: Bearer tg_aaaaaaaaaaaa_one',
        'x-api-key: tg_bbbbbbbbbbbb_two']), { timeoutMs: 4000, stopWhenComplete: true }),
    );
    assertRejected(two, 400, 'bad_request');
    assert.match(two.response.json.error.message, /two different Tollgate keys/);
    assert.ok(!two.text.includes('_one') && !two.text.includes('_two'), 'a key was echoed');
    // One of each, as SDKs send a placeholder beside the real key, is still fine.
    const ok = await fetchT(`${gw.url}/v1/models`, { headers: { authorization: 'Bearer sk-x', 'api-key': 'a', 'x-api-key': 'b' } });
    assert.equal(ok.status, 200);
  });

  test('known path, wrong method → 405 method_not_allowed', async () => {
    const r1 = await fetchT(chatUrl());
    assertOpenAIError({ status: r1.status, json: await r1.json() }, { status: 405, code: 'method_not_allowed' });
    const r2 = await fetchT(`${gw.url}/v1/models`, { method: 'DELETE' });
    assertOpenAIError({ status: r2.status, json: await r2.json() }, { status: 405, code: 'method_not_allowed' });
  });

  test('HEAD answers carry no body: the next answer on the connection starts right after the head', async () => {
    // A HEAD answered with its JSON body left those bytes to be read as the next answer's start
    // by any client or front proxy reusing the connection.
    for (const path of ['/v1/models', '/v1/chat/completions', '/v1/nowhere']) {
      const res = await rawExchange(gw.port, `HEAD ${path} HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`,
        { timeoutMs: 4000 });
      const data = res.data.toString('latin1');
      const first = data.indexOf('\r\n\r\n');
      assert.ok(first > 0, data.slice(0, 200));
      assert.match(data.slice(0, first), /^HTTP\/1\.1 \d{3} [^\r]*\r\n[^]*content-length: [1-9]/i, 'the HEAD answer keeps its Content-Length');
      assert.match(data.slice(first + 4), /^HTTP\/1\.1 200 /, `after HEAD ${path}: ${data.slice(first + 4, first + 80)}`);
    }
  });

  test('unknown path → 404 not_found', async () => {
    const r = await fetchT(`${gw.url}/v1/does-not-exist`);
    assertOpenAIError({ status: r.status, json: await r.json() }, { status: 404, code: 'not_found' });
    const m = await fetchT(`${gw.url}/metrics`);
    assert.equal(m.status, 404);
  });

  test('POST body that is not application/json → 415; a charset parameter is fine', async () => {
    assertOpenAIError(await postJson(chatUrl(), GOOD, { headers: { 'content-type': 'text/plain' } }), {
      status: 415,
      code: 'unsupported_media_type',
    });
    assertOpenAIError(await postJson(chatUrl(), GOOD, { headers: { 'content-type': 'application/x-www-form-urlencoded' } }), {
      status: 415,
      code: 'unsupported_media_type',
    });
    const ok = await postJson(chatUrl(), GOOD, { headers: { 'content-type': 'application/json; charset=utf-8' } });
    assert.equal(ok.status, 200, ok.text);
  });
});

describe('request smuggling attempts → 400 and the connection closed', () => {
  const body = GOOD;
  const cases = {
    'Content-Length and Transfer-Encoding together': head([
      'POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json',
      `Content-Length: ${body.length}`, 'Transfer-Encoding: chunked',
    ]) + `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
    'Transfer-Encoding: gzip (not ending in chunked)': head([
      'POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json', 'Transfer-Encoding: gzip',
    ]) + body,
    'Transfer-Encoding: chunked, gzip': head([
      'POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json', 'Transfer-Encoding: chunked, gzip',
    ]) + `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
    'two differing Content-Length headers': head([
      'POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json',
      `Content-Length: ${body.length}`, `Content-Length: ${body.length + 5}`,
    ]) + body + 'GET /',
    'obs-fold (header continuation line)': head([
      'POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json',
      'X-Folded: first', ' second', `Content-Length: ${body.length}`,
    ]) + body,
    'bare LF line endings': [
      'POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json', `Content-Length: ${body.length}`, '', '',
    ].join('\n') + body,
  };
  for (const [name, bytes] of Object.entries(cases)) {
    test(name, async () => {
      const res = await whileProbing(() => rawExchange(gw.port, bytes, { timeoutMs: 3000 }));
      assertRejected(res, 400, 'bad_request');
      // Exactly one response: nothing smuggled through behind it.
      const r = res.response;
      assert.equal(res.data.length, r.consumed, `extra bytes after the 400: ${res.text.slice(r.consumed, r.consumed + 200)}`);
    });
  }
});

describe('slow clients', () => {
  test('slowloris (one header byte every 2 s) → 408 and closed, while others are served', async () => {
    const line = 'GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Slow: abcdefghij\r\n\r\n';
    const parts = [...line].map((ch, i) => ({ data: ch, delayMs: i === 0 ? 0 : 2000 }));
    const started = Date.now();
    const res = await rawExchange(gw.port, parts, { timeoutMs: 6000 });
    assertRejected(res, 408, 'request_timeout');
    const took = res.closedAt - started;
    assert.ok(took >= 1200 && took < 4500, `408 after ${took} ms; header_read_ms is 1500`);
    const during = probes.filter((p) => p.ok && p.start >= started && p.end <= res.firstByteAt);
    assert.ok(during.length >= 3, `only ${during.length} successful probes while the slow client held its connection`);
    assertNoFailedProbes();
  });

  test('slow body (head fast, body stalls) → 408 and closed', async () => {
    const started = Date.now();
    const res = await whileProbing(() =>
      rawExchange(gw.port, [
        head(['POST /v1/chat/completions HTTP/1.1', 'Host: t', 'Content-Type: application/json', `Content-Length: ${GOOD.length}`]),
        GOOD.slice(0, 10),
        { data: GOOD.slice(10, 20), delayMs: 1000 },
        { data: GOOD.slice(20), delayMs: 3000 },
      ], { timeoutMs: 6000 }),
    );
    assertRejected(res, 408, 'request_timeout');
    const took = res.closedAt - started;
    assert.ok(took >= 1200 && took < 4000, `408 after ${took} ms; body_read_ms is 1500`);
  });
});

describe('the well-behaved client', () => {
  test('was served throughout, never failed', () => {
    assert.ok(probes.filter((p) => p.ok).length >= 30, `only ${probes.length} probes ran`);
    assertNoFailedProbes();
  });
});
