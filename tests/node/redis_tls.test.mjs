// The Redis store over TLS (store.redis.tls): the real tollgate against a real redis-server that
// listens with TLS only on the port the gateway is given. hiredis 0.14 has no TLS: the gateway
// relays it (policy/redis_tls.hpp). Certificates are made per run with the openssl CLI.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { certMaker } from './lib/certs.mjs';
import { serverYaml, startGateway } from './lib/gateway.mjs';
import { adminToken, chat, staticKey } from './lib/policy_helpers.mjs';
import { freePort, startRedis, waitStoreUp } from './lib/redis.mjs';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-redis-tls-node-'));
const certs = certMaker(dir);

describe('Redis store over TLS', () => {
  const adm = adminToken();
  const key = staticKey('tlskey1');
  let redis, tlsPort, ca, otherCa;
  const gateways = [];

  before(async () => {
    ca = certs.ca('ca');
    otherCa = certs.ca('other-ca');
    const server = certs.leaf('redis', ca, 'DNS:redis.test,IP:127.0.0.1');
    tlsPort = await freePort();
    redis = await startRedis({
      extraArgs: ['--tls-port', String(tlsPort), '--tls-cert-file', server.cert, '--tls-key-file', server.key,
        '--tls-ca-cert-file', ca.cert, '--tls-auth-clients', 'no'],
    });
  });

  after(async () => {
    for (const gw of gateways) await gw.kill();
    await redis?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const config = (tls) => serverYaml({ workers: 1, openAuth: false }) + `auth:
  required: true
  admin_tokens:
${adm.yaml}store:
  type: redis
  redis: {address: "127.0.0.1:${tlsPort}", key_prefix: "tgtls:", timeout_ms: 500, connect_timeout_ms: 500, tls: ${tls}}
teams:
  - name: t
    limits: {rpm: 2}
keys:
  - {id: ${key.id}, team: t, digest: "${key.digest}"}
providers:
  - {name: mock, type: mock}
models:
  - {name: mock-gpt, provider: mock}
`;
  const body = { model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 };

  test('limits are enforced through a verified TLS connection to Redis', { timeout: 20000 }, async () => {
    const gw = await startGateway(config(`{ca_file: "${ca.cert}", server_name: redis.test}`));
    gateways.push(gw);
    await waitStoreUp(gw, adm.token);
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await chat(gw, key.full, body)).status);
    // rpm 2, counted in Redis (the store is up: not the local fallback, which would allow 2 / 1 too,
    // so the store's own record is checked below).
    assert.deepEqual(statuses, [200, 200, 429]);
    const scrape = await fetch(`${gw.adminUrl}/metrics`).then((r) => r.text());
    assert.match(scrape, /tollgate_policy_store_degraded 0\b/);
    assert.match(scrape, /tollgate_policy_decisions_total\{decision="admitted"\} 2\b/);
    assert.doesNotMatch(scrape, /decision="local"/);
  });

  test('a server certificate from another CA is refused: degraded, with the reason in the log', { timeout: 20000 }, async () => {
    const gw = await startGateway(config(`{ca_file: "${otherCa.cert}"}`));
    gateways.push(gw);
    // No budget: rate limits fall back to local ones; the store stays unreachable. A call that
    // comes before the first handshake has failed degrades without a reason; the reason follows
    // in a line of its own at the next call once the handshake has failed.
    const r = await chat(gw, key.full, body);
    assert.equal(r.status, 200);
    await gw.waitForStderr(/policy store unreachable: degraded mode[^\n]*/, 5000);
    const reason = /policy store unreachable[^\n]*TLS handshake with 127\.0\.0\.1: certificate verify failed/;
    for (let i = 0; i < 20 && !reason.test(gw.stderr()); i++) {
      await new Promise((ok) => setTimeout(ok, 100));
      assert.equal((await chat(gw, key.full, body)).status, 200);
    }
    assert.match(gw.stderr(), reason);
    // The reason is told once per episode, not per call.
    assert.equal(gw.stderr().match(/policy store unreachable/g).length <= 2, true);
    const scrape = await fetch(`${gw.adminUrl}/metrics`).then((x) => x.text());
    assert.match(scrape, /tollgate_policy_store_degraded 1\b/);
    assert.match(scrape, /decision="local"/);
  });

  test('--check refuses an unreadable ca_file', async () => {
    const { runTollgate } = await import('./lib/gateway.mjs');
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, config('{ca_file: /nonexistent/ca.pem}'));
    const r = await runTollgate(['--config', file, '--check']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /store\.redis\.tls\.ca_file: cannot read \/nonexistent\/ca\.pem/);
  });
});
