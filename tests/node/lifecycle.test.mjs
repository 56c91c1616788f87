// Process lifecycle and observability: --check, the ready file, SIGTERM drain, SIGHUP reload,
// request ids, the access log, /metrics, health endpoints.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loadFixtures, shortChunks, startFakeOpenAI } from './lib/fake_openai.mjs';
import {
  REQUEST_ID_RE,
  auditRecords,
  eventually,
  fetchT,
  httpRequest,
  postJson,
  runTollgate,
  serverYaml,
  startGateway,
  tempConfig,
} from './lib/gateway.mjs';
import { counterSamplesForModel, parseMetrics, promtoolCheck } from './lib/prom.mjs';
import { contentOf, readSse } from './lib/sse.mjs';

const fx = loadFixtures();
const PROVIDER_KEY = 'sk-lifecycle-provider-key-7f3a9c';
const CALLER_KEY = 'sk-lifecycle-caller-key-1b2c3d';
const SLOW_TEXT = contentOf(shortChunks(12));
const msgs = [{ role: 'user', content: 'hello' }];

let fake;

function config({ extraModels = '', drainMs = 5000 } = {}) {
  return (
    serverYaml({ workers: 2, timeouts: { drain_ms: drainMs } }) +
    `providers:
  - name: fake
    type: openai_compatible
    base_url: ${fake.baseURL}
    api_key: \${env:TOLLGATE_TEST_FAKE_KEY}
    proxy: none
  - name: mock
    type: mock
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
  - name: gpt-slowbody
    provider: fake
    upstream_model: slow-body
  - name: mock-gpt
    provider: mock
${extraModels}`
  );
}

const start = (opts) => startGateway(config(opts), { env: { TOLLGATE_TEST_FAKE_KEY: PROVIDER_KEY } });

before(async () => {
  fake = await startFakeOpenAI({ apiKey: PROVIDER_KEY, slowChunkMs: 100 });
});
after(async () => {
  await fake?.close();
});

/** Starts a stream and resolves once its first event arrived; `.done` resolves with readSse's result. */
async function openStream(gw, model, body = {}) {
  const r = await fetchT(`${gw.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${CALLER_KEY}` },
    body: JSON.stringify({ model, messages: msgs, stream: true, ...body }),
  }, 30000);
  assert.equal(r.status, 200);
  let first;
  const firstEvent = new Promise((res) => (first = res));
  const done = readSse(r, { onEvent: () => first(), timeoutMs: 20000 });
  done.then(() => first());
  await firstEvent;
  return { response: r, done };
}

async function modelIds(gw) {
  const r = await fetchT(`${gw.baseURL}/models`);
  const j = await r.json();
  return j.data.map((m) => m.id);
}

// ---------------------------------------------------------------------------------------------

describe('--check', () => {
  const good = `providers:
  - name: mock
    type: mock
models:
  - name: mock-gpt
    provider: mock
prices:
  mock-gpt: {input: 0, output: 0}
`;

  test('a good config: exit 0, "config ok"', async () => {
    const c = tempConfig(good);
    try {
      const r = await runTollgate(['--config', c.path, '--check']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout + r.stderr, /config ok/);
    } finally {
      c.cleanup();
    }
  });

  test('an unknown key: exit 2, names the YAML path and line', async () => {
    const c = tempConfig(`server:
  listen: 127.0.0.1:0
  limtis:
    max_body_bytes: 10
${good}`);
    try {
      const r = await runTollgate(['--config', c.path, '--check']);
      assert.equal(r.code, 2, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
      assert.match(r.stderr, /server\.limtis/);
      assert.match(r.stderr, /line\D{0,3}3\b/, r.stderr);
    } finally {
      c.cleanup();
    }
  });

  test('a model naming a missing provider: exit 2, names the model and the provider', async () => {
    const c = tempConfig(`providers:
  - name: mock
    type: mock
models:
  - name: mock-gpt
    provider: mock
  - name: orphan-model
    provider: nowhere-provider
`);
    try {
      const r = await runTollgate(['--config', c.path, '--check']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /nowhere-provider/);
      assert.match(r.stderr, /orphan-model|models\[1\]/);
      assert.match(r.stderr, /line\D{0,3}8\b/, r.stderr);
    } finally {
      c.cleanup();
    }
  });

  test('broken YAML: exit 2 with a line number', async () => {
    const c = tempConfig(`server:
  listen: [127.0.0.1:0
providers: []
`);
    try {
      const r = await runTollgate(['--config', c.path, '--check']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /line/i);
      assert.ok(r.stderr.includes(c.path), `stderr should name the file: ${r.stderr}`);
    } finally {
      c.cleanup();
    }
  });

  test('a missing config file: exit 2', async () => {
    const r = await runTollgate(['--config', '/nonexistent/tollgate.yaml', '--check']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /nonexistent/);
  });
});

describe('running gateway', () => {
  let gw;
  before(async () => {
    gw = await start();
  });
  after(async () => {
    try {
      if (gw?.alive) await gw.stopClean();
    } finally {
      await gw?.kill();
    }
  });

  test('ready file: pid, both addresses, real ports; written by rename (no temp left)', async () => {
    const ready = JSON.parse(readFileSync(gw.readyPath, 'utf8'));
    assert.equal(ready.pid, gw.pid);
    assert.equal(ready.listen.address, '127.0.0.1');
    assert.equal(ready.admin.address, '127.0.0.1');
    assert.ok(ready.listen.port > 0 && ready.admin.port > 0 && ready.listen.port !== ready.admin.port);
    // The audit trail's directory (audit.dir, relative to the config file) sits beside them.
    assert.deepEqual(gw.files().sort(), ['audit', 'ready.json', 'tollgate.yaml']);
    assert.equal(ready.audit_dir, join(gw.dir, 'audit'));
    for (const url of [gw.url, gw.adminUrl]) {
      const r = await fetchT(`${url}/healthz`);
      assert.equal(r.status, 200);
    }
  });

  test('/healthz and /readyz answer 200 on both listeners', async () => {
    for (const url of [gw.url, gw.adminUrl]) {
      for (const p of ['/healthz', '/readyz']) {
        const r = await fetchT(`${url}${p}`);
        await r.arrayBuffer();
        assert.equal(r.status, 200, `${url}${p}`);
      }
    }
  });

  test('/metrics: only on the admin listener', async () => {
    const r = await fetchT(`${gw.url}/metrics`);
    assert.equal(r.status, 404);
    const a = await fetchT(`${gw.adminUrl}/metrics`);
    assert.equal(a.status, 200);
    assert.match(a.headers.get('content-type'), /^text\/plain/);
    // and the admin listener does not serve the caller API
    const c = await postJson(`${gw.adminUrl}/v1/chat/completions`, { model: 'mock-gpt', messages: msgs });
    assert.equal(c.status, 404);
  });

  test('x-request-id on every kind of response: 16 lowercase hex', async () => {
    const responses = [
      await fetchT(`${gw.url}/healthz`),
      await fetchT(`${gw.url}/v1/models`),
      await fetchT(`${gw.url}/v1/nope`),
      await fetchT(`${gw.adminUrl}/metrics`),
      await fetchT(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' }),
      await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-fixture', messages: msgs }),
      }),
      await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-fixture', messages: msgs, stream: true }),
      }),
    ];
    for (const r of responses) {
      await r.arrayBuffer();
      assert.match(r.headers.get('x-request-id') ?? '', REQUEST_ID_RE, `${r.url} ${r.status}`);
    }
  });

  test('x-request-id: unique under concurrency, increasing on one connection, time-based', async () => {
    const par = await Promise.all(Array.from({ length: 40 }, () => fetchT(`${gw.url}/healthz`)));
    const ids = par.map((r) => r.headers.get('x-request-id'));
    assert.equal(new Set(ids).size, ids.length, 'ids must be unique');

    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const seq = [];
    try {
      for (let i = 0; i < 20; i++) {
        const r = await httpRequest(`${gw.url}/healthz`, { agent });
        seq.push(r.headers['x-request-id']);
      }
    } finally {
      agent.destroy();
    }
    for (let i = 1; i < seq.length; i++) assert.ok(seq[i] > seq[i - 1], `ids not increasing: ${seq[i - 1]} then ${seq[i]}`);

    // New connections (possibly on different workers): the time part never goes backwards.
    const ms = [];
    for (let i = 0; i < 10; i++) {
      const r = await httpRequest(`${gw.url}/healthz`);
      ms.push(BigInt(`0x${r.headers['x-request-id']}`) >> 22n);
    }
    for (let i = 1; i < ms.length; i++) assert.ok(ms[i] >= ms[i - 1], 'time part of ids went backwards');
    const epoch = 1735689600000n; // documented in gateway/core/snowflake.hpp
    const when = Number(ms.at(-1) + epoch);
    assert.ok(Math.abs(when - Date.now()) < 10000, `id time ${new Date(when).toISOString()} is not now`);
  });

  test('keep-alive: 300 sequential requests on one connection are all answered', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set();
    try {
      for (let i = 0; i < 300; i++) {
        const r = await new Promise((resolve, reject) => {
          const req = http.request(`${gw.url}/healthz`, { agent }, (res) => {
            res.resume();
            res.on('end', () => resolve(res));
          });
          req.on('socket', (s) => sockets.add(s));
          req.setTimeout(2000, () =>
            req.destroy(new Error(`request ${i} on a reused keep-alive connection (reused=${req.reusedSocket}) got no answer within 2 s`)),
          );
          req.on('error', reject);
          req.end();
        });
        assert.equal(r.statusCode, 200);
      }
    } finally {
      agent.destroy();
    }
    assert.equal(sockets.size, 1, 'all requests should share one connection');
  });

  test('access log: one JSON line per request with the documented fields, no secrets', async () => {
    const r1 = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-fixture', messages: msgs }, {
      headers: { authorization: `Bearer ${CALLER_KEY}` },
    });
    assert.equal(r1.status, 200);
    const s = await openStream(gw, 'gpt-fixture');
    const sres = await s.done;
    assert.ok(sres.done);
    const r3 = await postJson(`${gw.baseURL}/chat/completions`, { model: 'no-such', messages: msgs });
    assert.equal(r3.status, 404);

    const expectations = [
      [r1.headers.get('x-request-id'), { method: 'POST', path: '/v1/chat/completions', status: 200, model: 'gpt-fixture', provider: 'fake' }],
      [s.response.headers.get('x-request-id'), { method: 'POST', path: '/v1/chat/completions', status: 200, model: 'gpt-fixture', provider: 'fake' }],
      [r3.headers.get('x-request-id'), { method: 'POST', path: '/v1/chat/completions', status: 404 }],
    ];
    for (const [id, want] of expectations) {
      const line = await gw.waitForLog((l) => l.request_id === id, 5000);
      for (const [k, v] of Object.entries(want)) assert.equal(line[k], v, `${k} in ${JSON.stringify(line)}`);
      assert.equal(typeof line.duration_ms, 'number');
      assert.ok(line.duration_ms >= 0);
      assert.equal(gw.accessLog().filter((l) => l.request_id === id).length, 1, `exactly one line for ${id}`);
    }
    const everything = gw.stdout() + gw.stderr();
    assert.ok(!everything.includes(PROVIDER_KEY), 'provider key appears in the logs');
    assert.ok(!everything.includes(CALLER_KEY), 'caller key appears in the logs');
  });

  test('/metrics passes promtool and counts requests per model', async () => {
    const scrape = async () => {
      const r = await fetchT(`${gw.adminUrl}/metrics`);
      return r.text();
    };
    const before = counterSamplesForModel(parseMetrics(await scrape()), 'gpt-fixture');
    for (let i = 0; i < 3; i++) {
      const r = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-fixture', messages: msgs });
      assert.equal(r.status, 200);
    }
    const text = await eventually(async () => {
      const t = await scrape();
      const now = counterSamplesForModel(parseMetrics(t), 'gpt-fixture');
      const grew = [...now].some(([k, v]) => v - (before.get(k) ?? 0) >= 3 && /request/.test(k));
      return grew ? t : undefined;
    }, { timeoutMs: 5000, what: 'a request counter for gpt-fixture growing by 3' });
    const check = await promtoolCheck(text);
    assert.equal(check.code, 0, `promtool check metrics failed:\n${check.stdout}${check.stderr}`);
    assert.ok(!text.includes(PROVIDER_KEY));
  });

  test("/metrics: the gateway's overhead leaves out the upstream's time, and the mock's", async () => {
    // tollgate_gateway_overhead_seconds is a call's duration less its waits on the upstream: a
    // body that takes the upstream 1 s and a stream that takes it 1.5 s add well under 0.2 s of
    // overhead between them, though their durations add over 2.3 s.
    const histogram = (text, family, labels) => {
      const parsed = parseMetrics(text);
      const pick = (suffix) =>
        parsed.samples
          .filter((x) => x.name === family + suffix && Object.entries(labels).every(([k, v]) => x.labels[k] === v))
          .reduce((a, x) => a + x.value, 0);
      return { count: pick('_count'), sum: pick('_sum') };
    };
    const scrape = async () => (await fetchT(`${gw.adminUrl}/metrics`)).text();
    const fake = { endpoint: 'chat_completions', provider: 'fake' };
    const t0 = await scrape();
    const before = histogram(t0, 'tollgate_gateway_overhead_seconds', fake);
    const durBefore = histogram(t0, 'tollgate_request_duration_seconds', fake);
    const r = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-slowbody', messages: msgs });
    assert.equal(r.status, 200, r.text);
    const stream = await openStream(gw, 'gpt-slow');
    const res = await stream.done;
    assert.ok(res.done && !res.error);
    const mock = await postJson(`${gw.baseURL}/chat/completions`, { model: 'mock-gpt', messages: msgs });
    assert.equal(mock.status, 200, mock.text);
    const t1 = await eventually(async () => {
      const t = await scrape();
      return histogram(t, 'tollgate_gateway_overhead_seconds', fake).count - before.count >= 2 ? t : undefined;
    }, { timeoutMs: 5000, what: 'two more overhead samples for the fake provider' });
    const after = histogram(t1, 'tollgate_gateway_overhead_seconds', fake);
    const durAfter = histogram(t1, 'tollgate_request_duration_seconds', fake);
    assert.equal(after.count - before.count, 2);
    assert.ok(durAfter.sum - durBefore.sum > 2.3, `durations added ${durAfter.sum - durBefore.sum} s`);
    assert.ok(after.sum - before.sum < 0.2, `overhead added ${after.sum - before.sum} s`);
    assert.ok(after.sum - before.sum > 0, "the gateway took some time of its own");
    assert.equal(histogram(t1, 'tollgate_gateway_overhead_seconds', { provider: 'mock' }).count, 0,
      'a call the built-in mock served has no upstream to leave out');
    const check = await promtoolCheck(t1);
    assert.equal(check.code, 0, `promtool check metrics failed:\n${check.stdout}${check.stderr}`);
  });

  test('SIGHUP with a new model: served afterwards; a stream in flight is unaffected', async () => {
    const stream = await openStream(gw, 'gpt-slow');
    gw.writeConfig(config({ extraModels: '  - name: gpt-added\n    provider: fake\n    upstream_model: fixture-text\n' }));
    gw.signal('SIGHUP');
    await eventually(async () => (await modelIds(gw)).includes('gpt-added'), { timeoutMs: 5000, what: 'gpt-added listed after SIGHUP' });
    const r = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-added', messages: msgs });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, fx.chatText.choices[0].message.content);
    const res = await stream.done;
    assert.ok(res.done && res.ended && !res.error, 'in-flight stream must finish normally');
    assert.equal(contentOf(res.events.filter((e) => e.json).map((e) => e.json)), SLOW_TEXT);
    assert.ok(gw.alive);
  });

  test('connections idle across two reloads read their next head under live limits (no freed config)', async () => {
    // An idle connection waits in its head read holding the limits of the config it began under;
    // two reloads and a request logged on each worker free that config. (Under AddressSanitizer, a
    // read of it aborts the gateway.)
    // (Each config keeps gpt-added, which the tests after this one call.)
    const added = '  - name: gpt-added\n    provider: fake\n    upstream_model: fixture-text\n';
    const reload = async (extra) => {
      gw.writeConfig(config({ extraModels: added + extra }));
      gw.signal('SIGHUP');
      await eventually(async () => (await modelIds(gw)).includes('gpt-idle-a') === Boolean(extra), { timeoutMs: 5000, what: 'the reload' });
    };
    // The connections begin their head reads under a reloaded config (the first one lives on in
    // the process); the next reload leaves it to them alone.
    await reload('  - name: gpt-idle-a\n    provider: fake\n    upstream_model: fixture-text\n');
    const socks = [];
    for (let i = 0; i < 4; i++) {
      const s = net.connect(gw.port, '127.0.0.1');
      await once(s, 'connect');
      socks.push(s);
    }
    await new Promise((r) => setTimeout(r, 100));
    await reload('');
    for (let i = 0; i < 6; i++) assert.equal((await postJson(`${gw.baseURL}/chat/completions`, { model: 'mock-gpt', messages: msgs })).status, 200);
    const pad = 'x'.repeat(5000);
    for (const s of socks) {
      let got = '';
      s.setEncoding('utf8').on('data', (d) => (got += d));
      // A head past one 4 KiB read, in two writes: the limit is read again between them.
      s.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ${pad.slice(0, 2500)}`);
      await new Promise((r) => setTimeout(r, 50));
      s.write(`${pad.slice(2500)}\r\n\r\n`);
      await eventually(() => /^HTTP\/1\.1 200 /.test(got) || undefined, { timeoutMs: 5000, what: `an answer (got ${JSON.stringify(got.slice(0, 80))})` });
      s.destroy();
    }
    assert.ok(gw.alive);
  });

  test('SIGHUP with a broken config: rejected with a reason on stderr, old config keeps serving', async () => {
    const idsBefore = await modelIds(gw);
    const errLen = gw.stderr().length;
    gw.writeConfig(config({ extraModels: '  - name: broken\n    provider: does-not-exist\n    bogus_key: 1\n' }));
    gw.signal('SIGHUP');
    // The reason must be logged, not just "reload failed".
    await gw.waitForStderr(/does-not-exist|bogus_key/, 5000, errLen);
    assert.ok(gw.alive, 'a bad reload must not kill the gateway');
    assert.deepEqual(await modelIds(gw), idsBefore);
    const r = await postJson(`${gw.baseURL}/chat/completions`, { model: 'gpt-added', messages: msgs });
    assert.equal(r.status, 200, r.text);

    // Broken YAML too.
    const errLen2 = gw.stderr().length;
    gw.writeConfig('server: [oops\n');
    gw.signal('SIGHUP');
    await gw.waitForStderr(/yaml[^\n]*line \d+|line \d+[^\n]*yaml/i, 5000, errLen2);
    assert.ok(gw.alive);
    assert.deepEqual(await modelIds(gw), idsBefore);

    // A good file afterwards is taken again.
    gw.writeConfig(config());
    gw.signal('SIGHUP');
    await eventually(async () => !(await modelIds(gw)).includes('gpt-added'), { timeoutMs: 5000, what: 'reload after a fixed config' });
  });
});

describe('SIGTERM', () => {
  test('drains a stream in flight, refuses new work, exits 0', async () => {
    const gw = await start();
    try {
      const stream = await openStream(gw, 'gpt-slow');
      const t0 = Date.now();
      gw.signal('SIGTERM');
      // New work during the drain: refused (503 shutting_down) or the listener is closed.
      await gw.waitForStderr(/drain/i, 3000).catch(() => {});
      const late = await postJson(`${gw.baseURL}/chat/completions`, { model: 'mock-gpt', messages: msgs }, { timeoutMs: 3000 }).then(
        (r) => r,
        (e) => ({ error: e }),
      );
      if (!late.error) {
        assert.equal(late.status, 503, `new request during drain got ${late.status}`);
        assert.equal(late.json?.error?.code, 'shutting_down');
      }
      const res = await stream.done;
      assert.ok(res.done && res.ended && !res.error, `in-flight stream must complete (done=${res.done}, error=${res.error})`);
      assert.equal(contentOf(res.events.filter((e) => e.json).map((e) => e.json)), SLOW_TEXT);
      const exit = await Promise.race([gw.exited, new Promise((r) => setTimeout(() => r('timeout'), 5000))]);
      assert.deepEqual(exit, { code: 0, signal: null }, gw.stderr());
      assert.ok(Date.now() - t0 < 6000);
    } finally {
      await gw.kill();
    }
  });

  test('stop signals that keep coming after the drain do not cut the audit trail\'s close: exit 0, a stop record', async () => {
    // A Ctrl-C and then a script's trap (deploy/quickstart), or an impatient supervisor: once the
    // drain ended, Asio's handlers went with it and the default action ended the process while
    // the trail was being closed.
    const gw = await start();
    try {
      assert.equal((await postJson(`${gw.baseURL}/chat/completions`, { model: 'mock-gpt', messages: msgs })).status, 200);
      gw.signal('SIGINT');
      const spam = setInterval(() => {
        try {
          gw.signal('SIGTERM');
        } catch {
          // (gone)
        }
      }, 1);
      const exit = await Promise.race([gw.exited, new Promise((r) => setTimeout(() => r('timeout'), 8000))]);
      clearInterval(spam);
      assert.deepEqual(exit, { code: 0, signal: null }, gw.stderr().slice(-2000));
      const last = auditRecords(gw.ready.audit_dir).at(-1);
      assert.equal(last.type, 'stop', JSON.stringify(last));
    } finally {
      await gw.kill();
    }
  });

  test('a --ready-file that cannot be written: exit 1 with the reason, not a gateway nobody knows is up', async () => {
    const cfg = tempConfig(config());
    try {
      const r = await runTollgate(['--config', cfg.path, '--ready-file', join(cfg.dir, 'no-such-dir', 'ready.json')],
        { env: { TOLLGATE_TEST_FAKE_KEY: PROVIDER_KEY } });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /ready/i);
    } finally {
      cfg.cleanup();
    }
  });

  test('a stream longer than drain_ms is cut at drain_ms and the process still exits 0', async () => {
    const gw = await start({ drainMs: 600 });
    try {
      const stream = await openStream(gw, 'gpt-endless');
      const t0 = Date.now();
      gw.signal('SIGTERM');
      const exit = await Promise.race([gw.exited, new Promise((r) => setTimeout(() => r('timeout'), 5000))]);
      assert.deepEqual(exit, { code: 0, signal: null }, gw.stderr());
      const took = Date.now() - t0;
      assert.ok(took >= 500 && took < 3000, `exit ${took} ms after SIGTERM with drain_ms 600`);
      const res = await stream.done;
      assert.ok(!res.done, 'an endless stream cannot have finished');
    } finally {
      await gw.kill();
    }
  });
});
