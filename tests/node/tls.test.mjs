// TLS on both sides: the caller listener with a certificate, HTTPS upstreams verified against a
// CA file (certificate chain and host name), and HTTPS upstreams reached through an HTTP
// CONNECT proxy. Certificates are made per run with the openssl CLI.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { certMaker } from './lib/certs.mjs';
import { delay, serverYaml, startGateway } from './lib/gateway.mjs';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-tls-'));
function makeCert(name, cn, san) {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
    '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`], { stdio: 'ignore' });
  return { key, cert };
}

const COMPLETION = {
  id: 'chatcmpl-tls', object: 'chat.completion', created: 1732000000, model: 'gpt-tls',
  choices: [{ index: 0, message: { role: 'assistant', content: 'over tls', refusal: null }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
};

let server, upstream, upstreamPort, proxy, proxyPort, connects;
let proxyInjects = '';
const servers = [];

before(async () => {
  server = makeCert('server', 'localhost', 'DNS:localhost,IP:127.0.0.1');
  upstream = makeCert('upstream', 'localhost', 'DNS:localhost');
  const up = https.createServer({ key: readFileSync(upstream.key), cert: readFileSync(upstream.cert) }, (req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const parsed = JSON.parse(body);
      res.writeHead(200, { 'content-type': 'application/json', 'x-seen-model': parsed.model, 'x-seen-auth': req.headers.authorization ?? '' });
      res.end(JSON.stringify(COMPLETION));
    });
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  upstreamPort = up.address().port;
  servers.push(up);

  // A minimal HTTP CONNECT proxy that records the targets it tunnels to (and, when a test sets
  // proxyInjects, sends those bytes right after its answer).
  connects = [];
  proxy = http.createServer((req, res) => res.writeHead(405).end());
  proxy.on('connect', (req, socket, head) => {
    connects.push(req.url);
    const [host, port] = req.url.split(':');
    const target = net.connect(Number(port), host === 'localhost' ? '127.0.0.1' : host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n' + proxyInjects);
      if (head.length) target.write(head);
      target.pipe(socket);
      socket.pipe(target);
    });
    target.on('error', () => socket.destroy());
    socket.on('error', () => target.destroy());
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  proxyPort = proxy.address().port;
  servers.push(proxy);
});
after(() => {
  for (const s of servers) {
    s.closeAllConnections?.();
    s.close();
  }
  rmSync(dir, { recursive: true, force: true });
});

function providers() {
  return `providers:
  - name: tls-up
    type: openai_compatible
    base_url: https://localhost:${upstreamPort}/v1
    api_key: sk-upstream
    proxy: none
    tls: {ca_file: ${upstream.cert}}
  - name: tls-wrong-name
    type: openai_compatible
    base_url: https://127.0.0.1:${upstreamPort}/v1
    proxy: none
    tls: {ca_file: ${upstream.cert}}
  - name: tls-untrusted
    type: openai_compatible
    base_url: https://localhost:${upstreamPort}/v1
    proxy: none
  - name: via-proxy
    type: openai_compatible
    base_url: https://localhost:${upstreamPort}/v1
    proxy: http://127.0.0.1:${proxyPort}
    tls: {ca_file: ${upstream.cert}}
models:
  - {name: m-tls, provider: tls-up, upstream_model: gpt-tls}
  - {name: m-wrong-name, provider: tls-wrong-name}
  - {name: m-untrusted, provider: tls-untrusted}
  - {name: m-proxy, provider: via-proxy, upstream_model: gpt-tls}
`;
}

function httpsPost(port, path, body, ca) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', servername: 'localhost', port, path, method: 'POST', ca,
      headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe('TLS', () => {
  test('the caller listener speaks TLS with the configured certificate, and refuses plain HTTP', async () => {
    const gw = await startGateway(serverYaml() + `  tls:\n    cert_file: ${server.cert}\n    key_file: ${server.key}\n` + providers());
    try {
      const r = await httpsPost(gw.port, '/v1/chat/completions', { model: 'm-tls', messages: [{ role: 'user', content: 'hi' }] },
        readFileSync(server.cert));
      assert.equal(r.status, 200, r.text);
      assert.equal(JSON.parse(r.text).choices[0].message.content, 'over tls');
      assert.match(r.headers['x-request-id'], /^[0-9a-f]{16}$/);
      // A client that does not trust the certificate cannot talk to it.
      await assert.rejects(httpsPost(gw.port, '/v1/models', {}, undefined), /self[- ]signed|unable to verify|certificate/i);
      // Plain HTTP on the TLS port gets no HTTP answer.
      const plain = await new Promise((resolve) => {
        const s = net.connect(gw.port, '127.0.0.1', () => s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
        let data = '';
        s.on('data', (d) => (data += d));
        s.on('close', () => resolve(data));
        s.on('error', () => resolve(data));
        setTimeout(() => s.destroy(), 3000);
      });
      assert.ok(!plain.startsWith('HTTP/1.1 200'), `plain HTTP must not be served on the TLS port: ${plain.slice(0, 80)}`);
    } finally {
      await gw.stopClean();
    }
  });

  test('the first request on a TLS connection has body_read_ms for its body, not the handshake\'s header_read_ms', async () => {
    // The handshake's timer stayed armed: a body still arriving header_read_ms after the accept
    // was cut with no answer at all.
    const gw = await startGateway(serverYaml({ timeouts: { header_read_ms: 1500, body_read_ms: 10000 } }) +
      `  tls:\n    cert_file: ${server.cert}\n    key_file: ${server.key}\n` + providers());
    try {
      const body = JSON.stringify({ model: 'm-tls', messages: [{ role: 'user', content: 'hi' }] });
      const s = tls.connect({ port: gw.port, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(server.cert) });
      await once(s, 'secureConnect');
      let got = '';
      s.on('data', (d) => (got += d));
      const closed = once(s, 'close');
      s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
      const third = Math.ceil(body.length / 3);
      for (let i = 0; i < body.length; i += third) {
        await delay(1000);  // the whole body takes ~3 s: twice header_read_ms
        s.write(body.slice(i, i + third));
      }
      await closed;
      assert.match(got, /^HTTP\/1\.1 200 /, got.slice(0, 200));
      assert.match(got, /over tls/);
    } finally {
      await gw.stopClean();
    }
  });

  test('an HTTPS upstream is verified: trusted CA and matching name pass, wrong name or unknown CA give 502', async () => {
    const gw = await startGateway(serverYaml() + providers());
    try {
      const ok = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-tls', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(ok.status, 200);
      assert.equal((await ok.json()).usage.total_tokens, 5);
      for (const model of ['m-wrong-name', 'm-untrusted']) {
        const bad = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }) });
        assert.equal(bad.status, 502, model);
        const err = (await bad.json()).error;
        assert.equal(err.code, 'upstream_error');
        assert.match(err.message, /TLS|certificate|handshake/i, model);
      }
    } finally {
      await gw.stopClean();
    }
  });

  test('a CA bundle rewritten in place is read again at a reload: the upstream\'s new certificate is trusted', { timeout: 30000 }, async () => {
    // Workers kept each CA file's context for good, so a private upstream moved to a certificate
    // from a new CA failed every call until a restart, reload or not.
    const certs = certMaker(dir);
    const caA = certs.ca('rot-ca-a'), caB = certs.ca('rot-ca-b');
    const leafA = certs.leaf('rot-leaf-a', caA, 'DNS:localhost'), leafB = certs.leaf('rot-leaf-b', caB, 'DNS:localhost');
    const bundle = join(dir, 'rot-bundle.pem');
    copyFileSync(caA.cert, bundle);
    // Each answer closes its connection: none is pooled, every call makes (and verifies) one.
    const rot = https.createServer({ key: readFileSync(leafA.key), cert: readFileSync(leafA.cert) }, (req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
        res.end(JSON.stringify(COMPLETION));
      });
    });
    rot.listen(0, '127.0.0.1');
    await once(rot, 'listening');
    servers.push(rot);
    const yaml = () => serverYaml() + `providers:
  - {name: rot, type: openai_compatible, base_url: "https://localhost:${rot.address().port}/v1", proxy: none, tls: {ca_file: ${bundle}}}
models:
  - {name: m-rot, provider: rot, upstream_model: gpt-tls}
`;
    const gw = await startGateway(yaml());
    const call = () => fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm-rot', messages: [{ role: 'user', content: 'hi' }] }) }).then(async (r) => ({ status: r.status, text: await r.text() }));
    try {
      for (let i = 0; i < 3; i++) assert.equal((await call()).status, 200);  // (both workers' contexts made)
      rot.setSecureContext({ key: readFileSync(leafB.key), cert: readFileSync(leafB.cert) });
      const refused = await call();
      assert.equal(refused.status, 502, 'the new certificate is not trusted before the bundle changes');
      copyFileSync(caB.cert, bundle);  // rewritten in place, the same path
      const errLen = gw.stderr().length;
      gw.writeConfig(yaml());
      gw.signal('SIGHUP');
      await gw.waitForStderr(/config reloaded/, 5000, errLen);
      for (let i = 0; i < 4; i++) {
        const r = await call();
        assert.equal(r.status, 200, r.text);
      }
    } finally {
      await gw.stopClean();
    }
  });

  test('an HTTPS upstream is reached through an HTTP CONNECT proxy', async () => {
    const gw = await startGateway(serverYaml() + providers());
    try {
      const before = connects.length;
      const r = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-proxy', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-seen-model'), 'gpt-tls');
      assert.deepEqual(connects.slice(before), [`localhost:${upstreamPort}`]);
    } finally {
      await gw.stopClean();
    }
  });

  test('bytes a proxy sends after its CONNECT answer are never taken for the upstream\'s answer', async () => {
    // Left in the read buffer (the TLS handshake reads the socket), they were parsed as the
    // upstream's answer after the certificate check: a forged completion.
    const forged = JSON.stringify({ ...COMPLETION, choices: [{ index: 0, message: { role: 'assistant', content: 'FORGED' }, finish_reason: 'stop' }] });
    const gw = await startGateway(serverYaml() + providers());
    try {
      proxyInjects = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${forged.length}\r\n\r\n${forged}`;
      const r = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-proxy', messages: [{ role: 'user', content: 'hi' }] }) });
      const text = await r.text();
      assert.equal(r.status, 502, text);
      assert.equal(JSON.parse(text).error.code, 'upstream_error');
      assert.ok(!text.includes('FORGED'), text);
      proxyInjects = '';
      const ok = await fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-proxy', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.get('x-seen-model'), 'gpt-tls');
    } finally {
      proxyInjects = '';
      await gw.stopClean();
    }
  });

  test('HTTPS_PROXY from the environment is used, and NO_PROXY bypasses it', async () => {
    const yaml = serverYaml() + providers().replace(/proxy: http:\/\/127\.0\.0\.1:\d+/, 'proxy: env');
    const viaEnv = await startGateway(yaml, { env: { HTTPS_PROXY: `http://127.0.0.1:${proxyPort}`, NO_PROXY: '' } });
    try {
      const before = connects.length;
      const r = await fetch(`${viaEnv.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-proxy', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 200);
      assert.equal(connects.length, before + 1);
    } finally {
      await viaEnv.stopClean();
    }
    const bypass = await startGateway(yaml, { env: { HTTPS_PROXY: `http://127.0.0.1:${proxyPort}`, NO_PROXY: 'localhost' } });
    try {
      const before = connects.length;
      const r = await fetch(`${bypass.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-proxy', messages: [{ role: 'user', content: 'hi' }] }) });
      assert.equal(r.status, 200);
      assert.equal(connects.length, before, 'NO_PROXY must bypass the proxy');
    } finally {
      await bypass.stopClean();
    }
  });
});
