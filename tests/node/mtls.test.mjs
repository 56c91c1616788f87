// mTLS service identity: the caller listener requires client certificates from a configured CA,
// and a certificate's SAN (a SPIFFE URI or a DNS name) authenticates as a team without any key.
// Certificates are made per run with the openssl CLI.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { certMaker } from './lib/certs.mjs';
import { serverYaml, startGateway } from './lib/gateway.mjs';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-mtls-'));
const certs = certMaker(dir);
const makeCa = (name) => certs.ca(name);
/** A leaf signed by `ca` with the given SAN, as PEM contents (https options take them), and its files. */
function makeLeaf(name, ca, san) {
  const files = certs.leaf(name, ca, san);
  return { key: readFileSync(files.key), cert: readFileSync(files.cert), files };
}

function call(port, path, { client, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, path, method: body ? 'POST' : 'GET', rejectUnauthorized: false, agent: false,
      headers: body ? { 'content-type': 'application/json' } : {}, ...(client ?? {}),
    }, (res) => {
      let text = '';
      const issuer = res.socket.getPeerCertificate().issuer?.CN;
      res.setEncoding('utf8').on('data', (d) => (text += d)).on('end', () => resolve({ status: res.statusCode, text, issuer, headers: res.headers }));
    });
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

describe('mTLS identities', () => {
  let gw, ca, search, batch, stranger, rogue, both, spoof, shouting, yamlFor, otherCaFile;
  before(async () => {
    ca = makeCa('clients-ca');
    const otherCa = makeCa('other-ca');
    const server = makeLeaf('server', makeCa('server-ca'), 'IP:127.0.0.1');
    search = makeLeaf('search', ca, 'URI:spiffe://corp.example/ns/search/sa/api');
    // A DNS SAN names its team; the URI beside it maps to nothing (the DNS name must be read too).
    batch = makeLeaf('batch', ca, 'URI:spiffe://corp.example/ns/batch/sa/unmapped,DNS:batch.svc.corp.example');
    stranger = makeLeaf('stranger', ca, 'URI:spiffe://corp.example/ns/other/sa/api,DNS:other.svc.corp.example');
    // Two SANs, each the identity of another team.
    both = makeLeaf('both', ca, 'URI:spiffe://corp.example/ns/search/sa/api,DNS:batch.svc.corp.example');
    rogue = makeLeaf('rogue', otherCa, 'URI:spiffe://corp.example/ns/search/sa/api');
    // search's SPIFFE ID spelled as a DNS name (a CA that checks DNS names only would sign it),
    // and batch's DNS name in capitals (DNS names are case-insensitive).
    spoof = makeLeaf('spoof', ca, 'DNS:spiffe://corp.example/ns/search/sa/api');
    shouting = makeLeaf('shouting', ca, 'DNS:BATCH.Svc.corp.example');
    writeFileSync(join(dir, 'server.key.pem'), server.key);
    writeFileSync(join(dir, 'server.cert.pem'), server.cert);
    otherCaFile = otherCa.cert;
    yamlFor = (caFile, crlFile) => serverYaml({ openAuth: false }) +
      `  tls:\n    cert_file: ${join(dir, 'server.cert.pem')}\n    key_file: ${join(dir, 'server.key.pem')}\n    client_ca_file: ${caFile}\n` +
      (crlFile ? `    client_crl_file: ${crlFile}\n` : '') +
      `providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: mock-gpt, provider: mock}\n  - {name: secret-model, provider: mock}\n` +
      `teams:\n  - name: search\n    models: [mock-gpt]\n    identities: ["spiffe://corp.example/ns/search/sa/api"]\n` +
      `  - name: batch\n    models: [secret-model]\n    identities: ["batch.svc.corp.example"]\n`;
    gw = await startGateway(yamlFor(ca.cert));
  });
  after(async () => {
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a certificate whose SPIFFE ID maps to a team is admitted as that team, within its models', async () => {
    const client = { key: search.key, cert: search.cert };
    const ok = await call(gw.port, '/v1/chat/completions', { client, body: { model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 } });
    assert.equal(ok.status, 200, ok.text);
    const denied = await call(gw.port, '/v1/chat/completions', { client, body: { model: 'secret-model', messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(denied.status, 403, denied.text);
    assert.equal(JSON.parse(denied.text).error.code, 'model_not_allowed');
    const models = JSON.parse((await call(gw.port, '/v1/models', { client })).text);
    assert.deepEqual(models.data.map((m) => m.id), ['mock-gpt']);
  });

  test('a certificate whose DNS SAN maps to a team is admitted as that team, within its models', async () => {
    const client = { key: batch.key, cert: batch.cert };
    const ok = await call(gw.port, '/v1/chat/completions', { client, body: { model: 'secret-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 } });
    assert.equal(ok.status, 200, ok.text);
    const line = await gw.waitForLog((l) => l.model === 'secret-model' && l.status === 200);
    assert.equal(line.team, 'batch', JSON.stringify(line));
    assert.equal(line.subject, 'batch.svc.corp.example', 'the access log names the SAN that matched');
    const denied = await call(gw.port, '/v1/chat/completions', { client, body: { model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(denied.status, 403, denied.text);
    assert.equal(JSON.parse(denied.text).error.code, 'model_not_allowed');
    const models = JSON.parse((await call(gw.port, '/v1/models', { client })).text);
    assert.deepEqual(models.data.map((m) => m.id), ['secret-model']);
  });

  test('a valid certificate whose SAN maps to no team gets 401, not access', async () => {
    const r = await call(gw.port, '/v1/chat/completions', { client: { key: stranger.key, cert: stranger.cert }, body: { model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(r.status, 401, r.text);
    assert.equal(JSON.parse(r.text).error.code, 'invalid_api_key');
  });

  test('a DNS SAN spelled like a team\'s SPIFFE ID grants nothing; a DNS SAN matches whatever its case', async () => {
    const r = await call(gw.port, '/v1/models', { client: { key: spoof.key, cert: spoof.cert } });
    assert.equal(r.status, 401, r.text);
    assert.equal(JSON.parse(r.text).error.code, 'invalid_api_key');
    const ok = await call(gw.port, '/v1/models', { client: { key: shouting.key, cert: shouting.cert } });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(JSON.parse(ok.text).data.map((m) => m.id), ['secret-model']);
  });

  test('a certificate whose SANs name two teams gets 401: neither team, whatever the SANs\' order', async () => {
    const r = await call(gw.port, '/v1/models', { client: { key: both.key, cert: both.cert } });
    assert.equal(r.status, 401, r.text);
    assert.equal(JSON.parse(r.text).error.code, 'invalid_api_key');
    assert.match(JSON.parse(r.text).error.message, /more than one team/);
  });

  test('a client that resumes its TLS session (as SDK agents do) is served, as the same team', async () => {
    // With verification on and no session id context, OpenSSL failed every resumed handshake.
    const agent = new https.Agent({ keepAlive: false, maxCachedSessions: 10 });
    const once = () => new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: gw.port, path: '/v1/models', rejectUnauthorized: false, agent,
        key: search.key, cert: search.cert }, (res) => {
        let text = '';
        const reused = res.socket.isSessionReused();
        res.setEncoding('utf8').on('data', (d) => (text += d)).on('end', () => resolve({ status: res.statusCode, text, reused }));
      });
      req.setTimeout(10000, () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end();
    });
    const first = await once();
    assert.equal(first.status, 200, first.text);
    let resumed;
    for (let i = 0; i < 5 && !resumed?.reused; i++) {
      resumed = await once();  // (the ticket may come after the first answer: a few tries)
      assert.equal(resumed.status, 200, resumed.text);
      assert.deepEqual(JSON.parse(resumed.text).data.map((m) => m.id), ['mock-gpt'], 'still team search');
    }
    assert.ok(resumed.reused, 'the session was resumed');
    agent.destroy();
  });

  test('no certificate, or one from another CA, fails the handshake', async () => {
    await assert.rejects(call(gw.port, '/v1/models'), /certificate|handshake|alert|socket hang up|ECONNRESET/i);
    await assert.rejects(call(gw.port, '/v1/models', { client: { key: rogue.key, cert: rogue.cert } }), /certificate|unknown ca|alert|socket hang up|ECONNRESET/i);
    // The gateway keeps serving good callers afterwards.
    const again = await call(gw.port, '/v1/models', { client: { key: search.key, cert: search.cert } });
    assert.equal(again.status, 200);
  });

  /** Writes `yaml`, sends SIGHUP and waits for the reload's outcome line. */
  async function reloadWith(yaml, outcome = /config reloaded/) {
    const from = gw.stderr().length;
    gw.writeConfig(yaml);
    gw.signal('SIGHUP');
    await gw.waitForStderr(outcome, 5000, from);
  }
  const refused = /certificate|unknown ca|revoked|alert|socket hang up|ECONNRESET/i;
  const asSearch = { get client() { return { key: search.key, cert: search.cert }; } };

  test('a reload reads the client CA again: new connections are verified against the new one', async () => {
    await reloadWith(yamlFor(otherCaFile));
    await assert.rejects(call(gw.port, '/v1/models', asSearch), refused);
    const r = await call(gw.port, '/v1/models', { client: { key: rogue.key, cert: rogue.cert } });
    assert.equal(r.status, 200, 'a certificate of the new CA, naming team search');
    await reloadWith(yamlFor(ca.cert));
    assert.equal((await call(gw.port, '/v1/models', asSearch)).status, 200);
    await assert.rejects(call(gw.port, '/v1/models', { client: { key: rogue.key, cert: rogue.cert } }), refused);
  });

  test('a server certificate rotated in place is served after a reload; a connection open before keeps working', async () => {
    // A keep-alive connection opened before the rotation.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const viaAgent = () => call(gw.port, '/v1/models', { client: { key: search.key, cert: search.cert, agent } });
    const before = await viaAgent();
    assert.equal(before.status, 200);
    assert.equal(before.issuer, 'server-ca');
    const next = makeLeaf('server-2', makeCa('server-ca-2'), 'IP:127.0.0.1');
    writeFileSync(join(dir, 'server.key.pem'), next.key);
    writeFileSync(join(dir, 'server.cert.pem'), next.cert);
    await reloadWith(yamlFor(ca.cert));
    const fresh = await call(gw.port, '/v1/models', asSearch);
    assert.equal(fresh.status, 200);
    assert.equal(fresh.issuer, 'server-ca-2', 'new connections get the new certificate');
    const kept = await viaAgent();
    assert.equal(kept.status, 200, 'the connection opened before is still served');
    assert.equal(kept.issuer, 'server-ca', 'on the context it began with');
    // ...once: its client certificate was verified under the CA and CRL before the reload, so the
    // connection closes after that request and the next one is verified anew.
    assert.equal(kept.headers.connection, 'close');
    const again = await viaAgent();
    assert.equal(again.status, 200);
    assert.equal(again.issuer, 'server-ca-2', 'a new connection, on the new context');
    agent.destroy();
  });

  test('client_crl_file: a revoked certificate fails the handshake once the CRL is loaded; others keep working', async () => {
    await reloadWith(yamlFor(ca.cert, certs.crl('none-revoked', ca)));
    const asBatch = { client: { key: batch.key, cert: batch.cert } };
    assert.equal((await call(gw.port, '/v1/models', asBatch)).status, 200, 'an empty CRL revokes nothing');
    // An agent that caches TLS sessions holds a ticket from before the revocation.
    const agent = new https.Agent({ keepAlive: false, maxCachedSessions: 10 });
    const viaAgent = { client: { ...asBatch.client, agent } };
    for (let i = 0; i < 3; i++) assert.equal((await call(gw.port, '/v1/models', viaAgent)).status, 200);
    // And a keep-alive connection opened before the revocation.
    const open = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const viaOpen = { client: { ...asBatch.client, agent: open } };
    assert.equal((await call(gw.port, '/v1/models', viaOpen)).status, 200);
    await reloadWith(yamlFor(ca.cert, certs.crl('batch-revoked', ca, [batch.files])));
    await assert.rejects(call(gw.port, '/v1/models', asBatch), refused);
    await assert.rejects(call(gw.port, '/v1/models', viaAgent), refused, 'a ticket from before the reload does not resume');
    // The open connection ends with its next request: the one after needs a handshake, which the
    // CRL refuses (the revoked certificate does not live on while the client keeps sending).
    const last = await call(gw.port, '/v1/models', viaOpen);
    assert.equal(last.headers.connection, 'close');
    await assert.rejects(call(gw.port, '/v1/models', viaOpen), refused, 'the revoked certificate lived on in a kept connection');
    open.destroy();
    agent.destroy();
    assert.equal((await call(gw.port, '/v1/models', asSearch)).status, 200);
  });

  test('a reload whose TLS files are unusable fails whole: the listener keeps its certificate, CA and CRL', async () => {
    const bad = join(dir, 'garbage.crl.pem');
    writeFileSync(bad, 'not a CRL\n');
    await reloadWith(yamlFor(ca.cert, bad), /config reload failed.*cannot load the client CRL file/);
    assert.equal((await call(gw.port, '/v1/models', asSearch)).status, 200);
    await assert.rejects(call(gw.port, '/v1/models', { client: { key: batch.key, cert: batch.cert } }), refused,
      'the CRL loaded before still applies');
  });
});
