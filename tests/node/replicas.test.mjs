// Three gateways sharing one real redis-server: limits are global, and a key revoked through one
// replica is refused by every replica at once (Redis pub/sub), not after the key cache expires.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { assertOpenAIError, eventually, serverYaml, startGateway } from './lib/gateway.mjs';
import { admin, adminToken, chat, createKey, metricValue, scrape, splitKey, staticKey, tally } from './lib/policy_helpers.mjs';
import { startRedis, waitStoreUp } from './lib/redis.mjs';

const RPM = 30;
const msgs = [{ role: 'user', content: 'hello replicas' }];
const body = { model: 'mock-gpt', messages: msgs, max_tokens: 4 };

let redis;
const gws = [];
const adm = adminToken();
const rk = staticKey('rpmkey1');

before(async () => {
  redis = await startRedis();
  // key_cache_ms is long on purpose: a revocation seen within a second can only be the push.
  // timeout_ms is generous: these tests are about the shared limit, not the per-instance
  // fallback (policy.test.mjs), and the sanitizer build on a busy 2-core host has seen a Redis
  // round trip pass 50 ms, which admitted two calls under the local share.
  const yaml =
    serverYaml({ workers: 2, openAuth: false, freePrices: false }) +
    `auth:
  key_cache_ms: 30000
  admin_tokens:
${adm.yaml}prices:
  "*": {input: 1, output: 1}
store:
  type: redis
  redis: {address: "${redis.address}", key_prefix: "tgrep:", timeout_ms: 2000}
  replicas: 3
teams:
  - name: shared
    limits: {rpm: ${RPM}}
  - name: open
keys:
  - {id: ${rk.id}, team: shared, digest: "${rk.digest}"}
providers:
  - {name: mock, type: mock}
models:
  - {name: mock-gpt, provider: mock}
`;
  for (let i = 0; i < 3; i++) gws.push(await startGateway(yaml));
  for (const gw of gws) await waitStoreUp(gw, adm.token);
});

after(async () => {
  try {
    for (const gw of gws) if (gw.alive) await gw.stopClean();
  } finally {
    for (const gw of gws) await gw.kill();
    await redis?.close();
  }
});

describe('three gateways on one Redis', () => {
  test(`one global RPM limit: rpm ${RPM} over 3 replicas (a local share would be ${RPM / 3}) → exactly ${RPM} admitted`, { timeout: 20000 }, async () => {
    // Uneven on purpose: 40 calls to replica 0 first, then 25 each to replicas 1 and 2. Under one
    // shared limit replica 0 admits all 30 and the others none. A limit kept per replica (the
    // per-instance share, 10 each) would admit 10 at each; a limit per replica at full size would
    // admit 30 at each. Each wave is ten concurrent calls.
    const results = [];
    const plan = [...Array(40).fill(0), ...Array(25).fill(1), ...Array(25).fill(2)];
    for (let at = 0; at < plan.length; at += 10) {
      const batch = plan.slice(at, at + 10).map((i) => chat(gws[i], rk.full, body).then((r) => ({ ...r, replica: i })));
      results.push(...(await Promise.all(batch)));
    }
    assert.equal(results.length, RPM * 3);
    // Every decision was Redis's: none fell back to the per-instance share (which would be a
    // store timeout, not a flaw of the shared limit; said first, so that a failure names it).
    // And as a control that these counters are read at all: the admitted and refused ones add up.
    const decided = { admitted: 0, rpm: 0 };
    const fallbacks = [];
    for (const gw of gws) {
      const m = await scrape(gw);
      for (const d of ['local', 'unavailable', 'open']) fallbacks.push(metricValue(m, 'tollgate_policy_decisions_total', { decision: d }));
      for (const d of Object.keys(decided)) decided[d] += metricValue(m, 'tollgate_policy_decisions_total', { decision: d });
    }
    assert.deepEqual(fallbacks, Array(9).fill(0), `decisions local/unavailable/open per replica: ${fallbacks}`);
    assert.deepEqual(decided, { admitted: RPM, rpm: RPM * 2 }, 'decisions summed over the replicas');
    const statuses = tally(results.map((r) => r.status));
    assert.deepEqual(statuses, { 200: RPM, 429: RPM * 2 }, `statuses ${JSON.stringify(statuses)}`);
    const admittedBy = tally(results.filter((x) => x.status === 200).map((r) => r.replica));
    assert.deepEqual(admittedBy, { 0: RPM }, `admitted per replica ${JSON.stringify(admittedBy)}`);
    for (const r of results) {
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), String(RPM), `replica ${r.replica}, status ${r.status}`);
    }
    for (const r of results.filter((x) => x.status === 429)) {
      assertOpenAIError(r, { status: 429, code: 'rate_limit_exceeded', type: 'rate_limit_exceeded' });
      assert.ok(Number(r.headers.get('retry-after')) >= 1, `Retry-After ${r.headers.get('retry-after')}`);
      assert.ok(Number(r.headers.get('retry-after-ms')) > 0);
      assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0', `replica ${r.replica}`);
    }
    const stored = await redis.command('KEYS', 'tgrep:{shared}*');
    assert.ok(Array.isArray(stored) && stored.length > 0, `no Redis keys for team shared: ${JSON.stringify(stored)}`);
  });

  test('a key revoked through one replica is refused by all three within one second', { timeout: 20000 }, async () => {
    const [a] = gws;
    const created = await createKey(a, adm.token, { team: 'open', name: 'revoke-me' });
    const { id } = splitKey(created.key);
    // Every replica has looked the key up, so every replica holds it in its (30 s) cache.
    for (const gw of gws) {
      for (let i = 0; i < 2; i++) {
        const r = await chat(gw, created.key, body);
        assert.equal(r.status, 200, `replica ${gws.indexOf(gw)}: ${r.text}`);
      }
    }
    // The clock starts before the DELETE is sent: the second includes the revocation's own time.
    const revokedAt = Date.now();
    const del = await admin(a, adm.token, 'DELETE', `/admin/v1/keys/${id}`);
    assert.equal(del.status, 200, del.text);
    const seen = await Promise.all(
      gws.map((gw, i) =>
        eventually(
          async () => {
            const r = await chat(gw, created.key, body, { timeoutMs: 2000 });
            if (r.status === 200) return undefined;
            const err = assertOpenAIError(r, { status: 401, code: 'invalid_api_key' });
            assert.match(err.message, /revoked/i);
            return { replica: i, afterMs: Date.now() - revokedAt };
          },
          { timeoutMs: 3000, intervalMs: 10, what: `replica ${i} refusing the revoked key` },
        ),
      ),
    );
    for (const s of seen) assert.ok(s.afterMs <= 1000, `replica ${s.replica} still accepted the key ${s.afterMs} ms after the revocation`);
    // And it stays refused everywhere (not a refusal that a cache refill undoes).
    for (const gw of gws) {
      for (let k = 0; k < 3; k++) assertOpenAIError(await chat(gw, created.key, body), { status: 401, code: 'invalid_api_key' });
    }
  });
});
