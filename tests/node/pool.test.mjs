// Upstream keep-alive pool: connections the upstream closed while idle must never surface as
// errors to callers (Node closes idle keep-alive connections after 5 s, nginx after 75 s).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';

import { auditRecords, delay, eventually, serverYaml, startGateway } from './lib/gateway.mjs';

const COMPLETION = JSON.stringify({
  id: 'chatcmpl-pool', object: 'chat.completion', created: 1732000000, model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok', refusal: null }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
});

test('idle pooled connections closed by the upstream are not reused', async () => {
  let connections = 0;
  const up = http.createServer({ keepAliveTimeout: 150 }, (req, res) => {
    req.resume();
    req.on('end', () => {
      // A little delay so that concurrent requests need several pooled connections.
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(COMPLETION), 20);
    });
  });
  up.on('connection', () => connections++);
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const gw = await startGateway(serverYaml({ workers: 1 }) + `providers:
  - {name: up, type: openai_compatible, base_url: "http://127.0.0.1:${up.address().port}/v1"}
models:
  - {name: m, provider: up}
`);
  const burst = () =>
    Promise.all(Array.from({ length: 12 }, () =>
      fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }) }).then((r) => r.status)));
  try {
    for (let round = 0; round < 4; ++round) {
      const statuses = await burst();
      assert.deepEqual(statuses, Array(12).fill(200), `round ${round}`);
      await delay(400);  // longer than the upstream's keep-alive timeout: every pooled connection is now closed
    }
    assert.ok(connections >= 8, `the upstream saw ${connections} connections; pooled ones were closed and replaced`);
  } finally {
    await gw.stopClean();
    up.closeAllConnections();
    up.close();
  }
});

/**
 * A raw upstream: each request's answer is `respond(who, n)` (bytes written as they are), where
 * `who` is the first message's content and `n` counts requests from 1.
 */
async function rawUpstream(respond) {
  const completion = (text) => {
    const body = JSON.stringify({ ...JSON.parse(COMPLETION), choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: 'stop' }] });
    return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  };
  let n = 0;
  const heads = [];
  const up = net.createServer((sock) => {
    let buf = '';
    sock.on('error', () => {});
    sock.on('data', (d) => {
      buf += d.toString();
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/content-length: *(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        heads.push(buf.slice(0, end));
        const who = JSON.parse(buf.slice(end + 4, end + 4 + length)).messages[0].content;
        buf = buf.slice(end + 4 + length);
        const answer = respond(who, ++n, completion, sock);
        if (answer !== null) sock.write(answer);
      }
    });
  });
  up.heads = heads;
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  return up;
}

/** Asks `names` in turn (`pause` ms apart); each answer's status, text, error and headers, and the request heads the upstream saw. */
async function askEach(names, respond, { pause = 0, heads } = {}) {
  const up = await rawUpstream(respond);
  const gw = await startGateway(serverYaml({ workers: 1 }) + `providers:
  - {name: up, type: openai_compatible, base_url: "http://127.0.0.1:${up.address().port}/v1"}
models:
  - {name: m, provider: up}
`);
  const out = [];
  try {
    for (const who of names) {
      if (pause && out.length) await delay(pause);
      const r = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: who }] }) });
      const body = await r.json();
      out.push({ status: r.status, text: body.choices?.[0]?.message?.content, error: body.error, headers: r.headers });
    }
  } finally {
    await gw.stopClean();
    up.close();
  }
  if (heads) heads.push(...up.heads);
  return out;
}

test('interim 1xx answers (103 Early Hints, 100 Continue) are skipped: each caller gets its own answer', async () => {
  // Taken as the answer, the 103 went to the caller and the real answer stayed on the pooled
  // connection, where the next caller read it as its own.
  const got = await askEach(['ALICE', 'BOB', 'CAROL'], (who, n, completion) =>
    (n === 1 ? 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n' : '') +
    (n === 2 ? 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n' : '') + completion(`answer for ${who}`));
  assert.deepEqual(got.map((g) => [g.status, g.text]), [[200, 'answer for ALICE'], [200, 'answer for BOB'], [200, 'answer for CAROL']]);
});

test('bytes past an answer\'s end are never read as the next caller\'s answer', async () => {
  // An upstream that sends more than its Content-Length: a whole second answer here.
  const got = await askEach(['ALICE', 'BOB'], (who, n, completion) =>
    completion(`answer for ${who}`) + (n === 1 ? completion('answer for MALLORY') : ''));
  assert.deepEqual(got.map((g) => [g.status, g.text]), [[200, 'answer for ALICE'], [200, 'answer for BOB']]);
});

test('bytes arriving after an answer has ended (a late tail) are never read as the next caller\'s answer', async () => {
  // The tail comes 30 ms after the answer, once the connection is back in the pool; the next
  // call comes 150 ms later. A connection pooled for under 250 ms was taken without a look.
  const got = await askEach(['ALICE', 'BOB', 'CAROL'], (who, n, completion, sock) => {
    if (n === 1) setTimeout(() => sock.write(completion('answer for MALLORY')), 30);
    return completion(`answer for ${who}`);
  }, { pause: 150 });
  assert.deepEqual(got.map((g) => [g.status, g.text]), [[200, 'answer for ALICE'], [200, 'answer for BOB'], [200, 'answer for CAROL']]);
});

test('an upstream 204, 304 or redirect is no answer: 502, its Location not passed on, the next call served', async () => {
  const got = await askEach(['A', 'B', 'C', 'D'], (who, n, completion) => [
    'HTTP/1.1 204 No Content\r\n\r\n',
    'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
    'HTTP/1.1 302 Found\r\nLocation: http://evil.example/\r\nContent-Length: 0\r\n\r\n',
    completion(`answer for ${who}`)][n - 1]);
  for (const g of got.slice(0, 3)) {
    assert.equal(g.status, 502, JSON.stringify(g.error));
    assert.equal(g.error.code, 'upstream_error');
    assert.equal(g.headers.get('location'), null);
  }
  assert.deepEqual([got[3].status, got[3].text], [200, 'answer for D']);
});

test('an upstream flooding a chunk-size line is cut off (502), not buffered without end', async () => {
  const got = await askEach(['ALICE', 'BOB'], (who, n, completion, sock) => {
    if (n > 1) return completion(`answer for ${who}`);
    sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1;');
    const ext = 'x'.repeat(64 * 1024);
    for (let i = 0; i < 32; ++i) sock.write(ext);  // 2 MiB of one chunk extension, no line end
    return null;
  });
  assert.equal(got[0].status, 502, JSON.stringify(got[0].error));
  assert.equal(got[0].error.code, 'upstream_error');
  assert.deepEqual([got[1].status, got[1].text], [200, 'answer for BOB']);
});

test('upstream answers are asked for uncompressed; the provider\'s account headers are not passed on', async () => {
  const heads = [];
  const got = await askEach(['ALICE'], (who) => {
    const body = JSON.stringify({ ...JSON.parse(COMPLETION), choices: [{ index: 0, message: { role: 'assistant', content: who }, finish_reason: 'stop' }] });
    return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nopenai-organization: org-gateway\r\nopenai-project: proj_1\r\n` +
      `openai-processing-ms: 12\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  }, { heads });
  assert.equal(got[0].status, 200);
  assert.match(heads[0], /\r\nAccept-Encoding: identity\r\n/i);
  assert.equal(got[0].headers.get('openai-organization'), null);
  assert.equal(got[0].headers.get('openai-project'), null);
  assert.equal(got[0].headers.get('openai-processing-ms'), '12', 'other provider headers still pass');
});

test('a 101 Switching Protocols the gateway never asked for is an upstream failure, not an answer', async () => {
  const got = await askEach(['ALICE', 'BOB'], (who, n, completion) =>
    n === 1 ? 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n' : completion(`answer for ${who}`));
  assert.equal(got[0].status, 502);
  assert.equal(got[0].error.code, 'upstream_error', JSON.stringify(got[0].error));
  assert.deepEqual([got[1].status, got[1].text], [200, 'answer for BOB']);
});

test('a caller that stops reading is cut after server.timeouts.write_ms: its stream ends, is billed, and the upstream is closed', async () => {
  // A blocked write to the caller had no deadline: the upstream's idle timeout never fired (the
  // gateway was not reading it), and the connection, stream and upstream were held for ever.
  let upstreamClosed = false;
  const up = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const ev = `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm',
      choices: [{ index: 0, delta: { content: 'word '.repeat(800) }, finish_reason: null }] })}\n\n`;
    const pump = () => {
      while (!upstreamClosed) if (!res.write(ev)) return void res.once('drain', pump);
    };
    res.on('close', () => (upstreamClosed = true));
    pump();
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const gw = await startGateway(serverYaml({ workers: 1, timeouts: { write_ms: 1000 } }) + `providers:
  - {name: up, type: openai_compatible, base_url: "http://127.0.0.1:${up.address().port}/v1", timeouts: {idle_ms: 60000}}
models:
  - {name: m, provider: up}
`);
  try {
    const s = net.connect(gw.port, '127.0.0.1');
    await once(s, 'connect');
    s.pause();  // never reads
    const body = JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const closedAt = Date.now();
    await eventually(() => upstreamClosed, { timeoutMs: 15000, what: 'the upstream closed by the gateway' });
    const record = await eventually(() => auditRecords(gw.ready.audit_dir).find((r) => r.type === 'call' && r.stream), { timeoutMs: 5000, what: 'the audit record' });
    assert.equal(record.details, 'caller_write_timeout', JSON.stringify(record));
    assert.ok(record.completion_tokens > 0, `what was generated is billed: ${JSON.stringify(record)}`);
    assert.ok(Date.now() - closedAt < 14000);
    s.destroy();
  } finally {
    await gw.stopClean();
    up.closeAllConnections();
    up.close();
  }
});

test('a POST whose reused connection breaks after the upstream began on it is not sent twice', async () => {
  // Taken for a stale pooled connection, it was sent again on a new one: a second paid
  // completion when the upstream had worked on the first and then failed.
  let requests = 0;
  const up = await rawUpstream((who, n, completion) => {
    requests = n;
    if (n === 1) return completion(`answer for ${who}`);
    return null;  // the second request: worked on for a while, then the connection breaks
  });
  up.on('connection', (sock) => sock.on('data', () => {
    if (requests >= 2) setTimeout(() => sock.destroy(), 300);
  }));
  const gw = await startGateway(serverYaml({ workers: 1 }) + `providers:
  - {name: up, type: openai_compatible, base_url: "http://127.0.0.1:${up.address().port}/v1"}
models:
  - {name: m, provider: up}
`);
  try {
    const ask = (who) => fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: who }] }) });
    assert.equal((await ask('ALICE')).status, 200);
    const r = await ask('BOB');  // on the pooled connection
    assert.equal(r.status, 502, await r.text());
    await delay(200);
    assert.equal(requests, 2, 'the upstream received BOB\'s request once');
  } finally {
    await gw.stopClean();
    up.close();
  }
});
