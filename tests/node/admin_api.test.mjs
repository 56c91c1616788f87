// The admin API's teams, key listing and rotation, quotas and usage (docs/admin-api.md): on one
// gateway with the memory store, and on two replicas sharing a real Redis, where a change made
// through one replica takes effect on the other within a second, without a restart.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { assertOpenAIError, auditRecords, eventually, rawExchange, serverYaml, startGateway } from './lib/gateway.mjs';
import { admin, adminToken, chat, createKey, splitKey, staticKey } from './lib/policy_helpers.mjs';
import { startRedis, waitStoreUp } from './lib/redis.mjs';

const adm = adminToken('platform');
const ck = staticKey('cfgkey1');
const msgs = [{ role: 'user', content: 'hello admin api' }];
const body = (model = 'mock-gpt') => ({ model, messages: msgs, max_tokens: 4 });

function yaml(store = 'store:\n  type: memory\n', extraAuth = '') {
  return (
    serverYaml({ workers: 2, openAuth: false, freePrices: false }) +
    `auth:
${extraAuth}  admin_tokens:
${adm.yaml}prices:
  "mock-*": {input: 2, output: 4}
${store}teams:
  - name: cfgteam
    limits: {rpm: 1000}
keys:
  - {id: ${ck.id}, team: cfgteam, digest: "${ck.digest}"}
providers:
  - {name: mock, type: mock}
models:
  - {name: mock-gpt, provider: mock}
  - {name: mock-mini, provider: mock}
`
  );
}

const ok = (r, status = 200) => {
  assert.equal(r.status, status, `${r.status} ${r.text}`);
  return r.json;
};

/// Every record of a paged listing at `path`, `limit` a page, following last_id while has_more;
/// checks each page's framing and order on the way. Returns the ids and the number of pages.
async function allPages(gw, path, limit, idOf = (x) => x.id) {
  const ids = [];
  let after = null;
  for (let pages = 1; ; ++pages) {
    const sep = path.includes('?') ? '&' : '?';
    const page = ok(await admin(gw, adm.token, 'GET', `${path}${sep}limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ''}`));
    assert.equal(page.object, 'list');
    assert.ok(page.data.length <= limit, `a page of ${page.data.length} > ${limit}`);
    for (const x of page.data) {
      if (ids.length) assert.ok(idOf(x) > ids.at(-1), `${idOf(x)} after ${ids.at(-1)}: out of order`);
      ids.push(idOf(x));
    }
    assert.equal(page.first_id, page.data.length ? idOf(page.data[0]) : null);
    assert.equal(page.last_id, page.data.length ? idOf(page.data.at(-1)) : null);
    if (!page.has_more) return { ids, pages };
    assert.equal(page.data.length, limit, 'a short page says there is more');
    after = page.last_id;
  }
}

describe('admin API on one gateway (memory store)', () => {
  let gw;
  before(async () => {
    gw = await startGateway(yaml());
  });
  after(async () => {
    if (gw && !gw.alive) console.error(gw.stderr());
    await gw?.stopClean();
  });

  test('teams: create, show, list, duplicate and config names refused, bad input', async () => {
    const t = ok(await admin(gw, adm.token, 'POST', '/admin/v1/teams', {
      name: 'research', models: ['mock-*'], limits: { rpm: 50, concurrency: 3 }, budget: { usd: 2.5, period: 'daily', soft: 0.5 },
    }), 201);
    assert.deepEqual([t.name, t.source, t.limits.rpm, t.limits.concurrency, t.budget.usd, t.budget.period], ['research', 'api', 50, 3, 2.5, 'daily']);
    assert.deepEqual(ok(await admin(gw, adm.token, 'GET', '/admin/v1/teams/research')).limits, t.limits);
    const names = ok(await admin(gw, adm.token, 'GET', '/admin/v1/teams')).data.map((x) => `${x.name}:${x.source}`).sort();
    assert.deepEqual(names, ['cfgteam:config', 'research:api']);
    assertOpenAIError(await admin(gw, adm.token, 'POST', '/admin/v1/teams', { name: 'research' }), { status: 409, code: 'conflict' });
    assertOpenAIError(await admin(gw, adm.token, 'POST', '/admin/v1/teams', { name: 'cfgteam' }), { status: 409, code: 'conflict' });
    for (const bad of [{}, { name: '' }, { name: 'a/b' }, { name: 'x'.repeat(65) }, { name: 'ok', color: 'red' },
      { name: 'ok', limits: { rpm: -1 } }, { name: 'ok', budget: { usd: 'ten' } }, { name: 'ok', budget: { period: 'weekly' } },
      { name: 'ok', models: 'mock-gpt' }, { name: '-' }, { name: 'tg_ml_research' }])
      assertOpenAIError(await admin(gw, adm.token, 'POST', '/admin/v1/teams', bad), { status: 400 });
    // A URL segment shaped like a key is masked to its id before anything logs it: it must not
    // then name the team "ml".
    ok(await admin(gw, adm.token, 'POST', '/admin/v1/teams', { name: 'ml' }), 201);
    for (const method of ['DELETE', 'GET'])
      assertOpenAIError(await admin(gw, adm.token, method, '/admin/v1/teams/tg_ml_research'), { status: 404, code: 'not_found' });
    assert.equal(ok(await admin(gw, adm.token, 'GET', '/admin/v1/teams/ml')).name, 'ml', 'team ml still there');
    ok(await admin(gw, adm.token, 'DELETE', '/admin/v1/teams/ml'));
    assertOpenAIError(await admin(gw, adm.token, 'GET', '/admin/v1/teams/nosuch'), { status: 404, code: 'not_found' });
    assertOpenAIError(await admin(gw, adm.token, 'DELETE', '/admin/v1/teams/cfgteam'), { status: 409, code: 'conflict' });
    // Malformed JSON.
    const r = await fetch(`${gw.adminUrl}/admin/v1/teams`, { method: 'POST', headers: { authorization: `Bearer ${adm.token}` }, body: '{"name":' });
    assert.equal(r.status, 400);
  });

  test('a key of an API team works; quota changes apply at once; deleting the team stops its keys', async () => {
    ok(await admin(gw, adm.token, 'POST', '/admin/v1/teams', { name: 'ops' }), 201);
    const k = await createKey(gw, adm.token, { team: 'ops', name: 'ops-bot' });
    assert.equal((await chat(gw, k.key, body())).status, 200);
    const q = ok(await admin(gw, adm.token, 'PUT', '/admin/v1/quotas', { team: 'ops', rpm: 2 }));
    assert.equal(q.limits.rpm, 2);
    // The team had no limits before: its first call was not counted. Two more are admitted.
    for (let i = 0; i < 2; i++) assert.equal((await chat(gw, k.key, body())).status, 200);
    assertOpenAIError(await chat(gw, k.key, body()), { status: 429, code: 'rate_limit_exceeded' });
    // A key's own quota.
    const k2 = await createKey(gw, adm.token, { team: 'cfgteam' });
    ok(await admin(gw, adm.token, 'PUT', '/admin/v1/quotas', { team: 'cfgteam', key_id: k2.id, budget: { usd: 0 } }));
    assertOpenAIError(await chat(gw, k2.key, body()), { status: 429, code: 'budget_exceeded' });
    const shown = ok(await admin(gw, adm.token, 'GET', `/admin/v1/quotas?team=cfgteam&key=${k2.id}`));
    assert.equal(shown.budget.limit_nano, 0);
    // Quota of a config team: an override, visible as such.
    ok(await admin(gw, adm.token, 'PUT', '/admin/v1/quotas', { team: 'cfgteam', tpm: 123456 }));
    const cfg = ok(await admin(gw, adm.token, 'GET', '/admin/v1/teams/cfgteam'));
    assert.deepEqual([cfg.source, cfg.limits.rpm, cfg.limits.tpm], ['config+api', 1000, 123456]);
    // Bad quota requests.
    for (const bad of [{ team: 'ops' }, { rpm: 5 }, { team: 'ops', rpm: 'x' }, { team: 'ops', budget: { usd: -1 } }, { team: 'ops', burst: 3 },
      { team: 'ops', soft: 0.5 }, { team: 'ops', budget: { soft: 2 } }])
      assertOpenAIError(await admin(gw, adm.token, 'PUT', '/admin/v1/quotas', bad), { status: 400 });
    assertOpenAIError(await admin(gw, adm.token, 'PUT', '/admin/v1/quotas', { team: 'nosuch', rpm: 1 }), { status: 404 });
    assertOpenAIError(await admin(gw, adm.token, 'PUT', '/admin/v1/quotas', { team: 'cfgteam', key_id: ck.id, rpm: 1 }), { status: 409 });
    // Deleting the team: its keys are refused.
    ok(await admin(gw, adm.token, 'DELETE', '/admin/v1/teams/ops'));
    const gone = assertOpenAIError(await chat(gw, k.key, body()), { status: 401, code: 'invalid_api_key' });
    assert.match(gone.message, /revoked|team no longer exists/);
    // A team created later under the same name does not take them over: they were revoked.
    assert.equal((await admin(gw, adm.token, 'POST', '/admin/v1/teams', { name: 'ops', models: ['*'] })).status, 201);
    assertOpenAIError(await chat(gw, k.key, body()), { status: 401, code: 'invalid_api_key' });
    const listed = ok(await admin(gw, adm.token, 'GET', '/admin/v1/keys?team=ops')).data.find((x) => x.id === k.id);
    assert.equal(listed?.enabled, false, JSON.stringify(listed));
    ok(await admin(gw, adm.token, 'DELETE', '/admin/v1/teams/ops'));
  });

  test('listings come in pages: config and created keys merged in id order; bad paging parameters are 400', async () => {
    for (let i = 0; i < 5; ++i) await createKey(gw, adm.token, { team: 'cfgteam', name: `paged-${i}` });
    for (const name of ['pg-a', 'pg-b', 'pg-c'])
      assert.equal((await admin(gw, adm.token, 'POST', '/admin/v1/teams', { name, models: ['*'] })).status, 201);
    const whole = ok(await admin(gw, adm.token, 'GET', '/admin/v1/keys?team=cfgteam&limit=1000'));
    assert.equal(whole.has_more, false);
    const every = whole.data.map((k) => k.id);
    assert.ok(every.includes(ck.id), 'the config key is listed with the created ones');
    assert.ok(every.length >= 6, JSON.stringify(every));
    for (const limit of [1, 2, 5]) {
      const { ids, pages } = await allPages(gw, '/admin/v1/keys?team=cfgteam', limit);
      assert.deepEqual(ids, [...every].sort(), `pages of ${limit}`);
      assert.equal(pages, Math.ceil(every.length / limit), `pages of ${limit}`);
    }
    // Without a limit: the first 100, in id order.
    const dflt = ok(await admin(gw, adm.token, 'GET', '/admin/v1/keys'));
    assert.deepEqual(dflt.data.map((k) => k.id), [...dflt.data.map((k) => k.id)].sort());
    // Teams page by name, config and API teams together.
    const teams = ok(await admin(gw, adm.token, 'GET', '/admin/v1/teams?limit=1000')).data.map((t) => t.name);
    assert.ok(['cfgteam', 'pg-a', 'pg-b', 'pg-c'].every((n) => teams.includes(n)), JSON.stringify(teams));
    assert.deepEqual((await allPages(gw, '/admin/v1/teams', 2, (t) => t.name)).ids, [...teams].sort());
    for (const [q, param] of [['limit=0', 'limit'], ['limit=1001', 'limit'], ['limit=', 'limit'], ['limit=2x', 'limit'],
      ['limit=-1', 'limit'], ['after=', 'after'], ['team=', 'team'], ['team=%20', 'team']]) {
      const e = assertOpenAIError(await admin(gw, adm.token, 'GET', `/admin/v1/keys?${q}`), { status: 400, code: 'invalid_value' });
      assert.equal(e.param, param, q);
    }
    assertOpenAIError(await admin(gw, adm.token, 'GET', '/admin/v1/teams?limit=0'), { status: 400, code: 'invalid_value' });
    for (const name of ['pg-a', 'pg-b', 'pg-c']) ok(await admin(gw, adm.token, 'DELETE', `/admin/v1/teams/${name}`));
  });

  test('an expiry given in milliseconds is refused, not taken for a key that never expires', async () => {
    const r = await admin(gw, adm.token, 'POST', '/admin/v1/keys', { team: 'cfgteam', expires_unix: Date.now() + 3600_000 });
    const e = assertOpenAIError(r, { status: 400 });
    assert.match(e.message, /expires_unix must be unix seconds/);
    const ok1 = await admin(gw, adm.token, 'POST', '/admin/v1/keys', { team: 'cfgteam', expires_unix: Math.floor(Date.now() / 1000) + 3600 });
    assert.equal(ok1.status, 201, ok1.text);
  });

  test('keys: list without secrets; rotate with and without overlap', async () => {
    const k = await createKey(gw, adm.token, { team: 'cfgteam', name: 'rotating' });
    const list = ok(await admin(gw, adm.token, 'GET', '/admin/v1/keys?team=cfgteam')).data;
    const ids = list.map((x) => x.id);
    assert.ok(ids.includes(k.id) && ids.includes(ck.id), JSON.stringify(ids));
    const text = JSON.stringify(list);
    assert.ok(!/digest|"key"/.test(text), 'no digest and no secret in a key list');
    assert.ok(!text.includes(ck.hex) && !text.includes(splitKey(k.key).secret));

    const r1 = ok(await admin(gw, adm.token, 'POST', `/admin/v1/keys/${k.id}/rotate`, { overlap_seconds: 300 }));
    assert.equal(r1.id, k.id);
    assert.notEqual(r1.key, k.key);
    assert.ok(r1.previous_secret_valid_until_unix > Date.now() / 1000);
    assert.equal((await chat(gw, r1.key, body())).status, 200, 'the new secret works');
    assert.equal((await chat(gw, k.key, body())).status, 200, 'the old secret works during the overlap');
    const r2 = ok(await admin(gw, adm.token, 'POST', `/admin/v1/keys/${k.id}/rotate`, {}));
    assert.equal((await chat(gw, r2.key, body())).status, 200);
    for (const old of [k.key, r1.key]) assertOpenAIError(await chat(gw, old, body()), { status: 401, code: 'invalid_api_key' });
    assertOpenAIError(await admin(gw, adm.token, 'POST', `/admin/v1/keys/${k.id}/rotate`, { overlap_seconds: 99999999 }), { status: 400 });
    assertOpenAIError(await admin(gw, adm.token, 'POST', `/admin/v1/keys/${ck.id}/rotate`, {}), { status: 409 });
    assertOpenAIError(await admin(gw, adm.token, 'POST', '/admin/v1/keys/nosuch/rotate', {}), { status: 404 });
  });

  test('usage: requests, tokens and exact cost per team, key and model; bad ranges refused', async () => {
    const k = await createKey(gw, adm.token, { team: 'cfgteam', name: 'usage' });
    const answers = [];
    for (const model of ['mock-gpt', 'mock-gpt', 'mock-mini']) {
      const r = await chat(gw, k.key, body(model));
      assert.equal(r.status, 200);
      answers.push({ model, usage: r.json.usage });
    }
    const u = await eventually(async () => {
      const j = ok(await admin(gw, adm.token, 'GET', `/admin/v1/usage?team=cfgteam&key=${k.id}`));
      return j.total.requests === 3 ? j : undefined;
    }, { what: 'usage of three calls' });
    for (const model of ['mock-gpt', 'mock-mini']) {
      const mine = answers.filter((a) => a.model === model);
      const row = u.data.find((d) => d.model === model);
      assert.equal(row.requests, mine.length);
      const p = mine.reduce((s, a) => s + a.usage.prompt_tokens, 0);
      const c = mine.reduce((s, a) => s + a.usage.completion_tokens, 0);
      assert.equal(row.prompt_tokens, p);
      assert.equal(row.completion_tokens, c);
      assert.equal(row.cost_nano, p * 2000 + c * 4000, 'input $2/M and output $4/M, in nano-USD');
    }
    const one = ok(await admin(gw, adm.token, 'GET', `/admin/v1/usage?team=cfgteam&key=${k.id}&model=mock-mini`));
    assert.equal(one.total.requests, 1);
    const past = ok(await admin(gw, adm.token, 'GET', `/admin/v1/usage?team=cfgteam&from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z`));
    assert.equal(past.total.requests, 0);
    for (const q of ['from=yesterday', 'from=2026-01-02&to=2026-01-01', 'from=2020-01-01&to=2026-01-01'])
      assertOpenAIError(await admin(gw, adm.token, 'GET', `/admin/v1/usage?${q}`), { status: 400 });
  });

  test('a whole key given where its id belongs acts on the id and is never logged or echoed', async () => {
    // `tollgatectl key revoke <the leaked key>`, pasted in a hurry: the revocation works, and the
    // secret reaches no answer, access-log line, audit record or stderr line.
    const k = await createKey(gw, adm.token, { team: 'cfgteam', name: 'leaked' });
    const { secret } = splitKey(k.key);
    assert.equal((await chat(gw, k.key, body())).status, 200);
    const shown = ok(await admin(gw, adm.token, 'GET', `/admin/v1/keys/${k.key}`));
    assert.equal(shown.id, k.id);
    const quota = await admin(gw, adm.token, 'GET', `/admin/v1/quotas?team=cfgteam&key=${k.key}`);
    const rotated = await admin(gw, adm.token, 'POST', `/admin/v1/keys/${k.key}/rotate`, {});
    const revoked = ok(await admin(gw, adm.token, 'DELETE', `/admin/v1/keys/${k.key}`));
    assert.equal(revoked.id, k.id);
    assert.equal(revoked.enabled, false);
    assertOpenAIError(await chat(gw, ok(rotated).key, body()), { status: 401, code: 'invalid_api_key' });
    for (const r of [quota, rotated]) assert.ok(!r.text.includes(secret), r.text);
    // Sent to the caller listener by mistake: a 404 naming the path, by the key's id only.
    const wrongPort = await fetch(`${gw.url}/admin/v1/keys/${k.key}`, { method: 'DELETE' });
    const wrongText = await wrongPort.text();
    assert.equal(wrongPort.status, 404);
    assert.ok(wrongText.includes(k.id) && !wrongText.includes(secret), wrongText);
    // Refused before the admin API reads it (a body over the limit, percent-encoded, and a
    // key with something after it): audited and logged with the id only.
    for (const path of [`/admin/v1/keys/${k.key}/rotate`, `/admin/v1/keys/${k.key.replaceAll('_', '%5F')}/rotate`,
      `/admin/v1/keys/${k.key}.json`]) {
      const big = await rawExchange(gw.adminPort, `POST ${path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n` +
        `Content-Length: 999999999\r\n\r\n`, { timeoutMs: 4000 });
      assert.equal(big.response?.status, 413, big.text);
      assert.ok(!big.text.includes(secret), big.text);
    }
    await eventually(() => gw.stdout().split('\n').filter((l) => l.includes('"status":413')).length >= 3,
      { what: 'the refusals in the access log' });
    const dir = gw.ready.audit_dir;
    const audit = await eventually(() => {
      const text = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).map((f) => readFileSync(join(dir, f), 'utf8')).join('');
      const rec = text.split('\n').filter(Boolean).map((l) => JSON.parse(l))
        .find((r) => r.type === 'admin' && r.action === 'key.revoke' && r.status === 200 && r.target === k.id);
      return rec ? text : undefined;
    }, { what: 'the revocation in the audit trail, under the key id' });
    for (const [where, text] of [['audit', audit], ['stdout', gw.stdout()], ['stderr', gw.stderr()]])
      assert.ok(!text.includes(secret), `the secret appears in ${where}`);
  });

  test('admin actions are in the audit trail with the admin name', async () => {
    const dir = gw.ready.audit_dir;
    const recs = await eventually(() => {
      const all = auditRecords(dir).filter((r) => r.type === 'admin');
      const actions = new Set(all.map((r) => r.action));
      return ['team.create', 'team.delete', 'quota.set', 'key.rotate', 'key.list', 'usage.show'].every((a) => actions.has(a)) ? all : undefined;
    }, { what: 'admin records' });
    const del = recs.find((r) => r.action === 'team.delete' && r.status === 200 && r.target === 'ops');
    assert.deepEqual([del.admin, del.target], ['platform', 'ops']);
    const refused = recs.find((r) => r.action === 'team.delete' && r.status === 409);
    assert.equal(refused.target, 'cfgteam');
    // Refused before any change, a write still names what it asked for.
    const badCreate = recs.find((r) => r.action === 'team.create' && r.status === 400 && r.target === 'ok');
    assert.ok(badCreate, 'a refused team.create names the team');
    const badQuota = recs.find((r) => r.action === 'quota.set' && r.status === 400 && r.target === 'ops');
    assert.ok(badQuota, 'a refused quota.set names the team');
  });
});

describe('admin API on two replicas sharing Redis', () => {
  let redis;
  const gws = [];
  before(async () => {
    redis = await startRedis();
    // key_cache_ms is long on purpose: a change seen within a second can only be the push.
    const store = `store:\n  type: redis\n  redis: {address: "${redis.address}", key_prefix: "tgadm:", timeout_ms: 50}\n`;
    for (let i = 0; i < 2; i++) gws.push(await startGateway(yaml(store, '  key_cache_ms: 30000\n')));
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

  test('a team, quota, rotation and deletion made on one replica apply on the other within a second', { timeout: 30000 }, async () => {
    const [a, b] = gws;
    ok(await admin(a, adm.token, 'POST', '/admin/v1/teams', { name: 'shared', limits: { rpm: 100 } }), 201);
    const k = await createKey(a, adm.token, { team: 'shared' });
    assert.equal((await chat(b, k.key, body())).status, 200, 'the other replica knows the new team and key');
    // Each change is seen on B within a second of the change request being sent (its own time
    // included), by B's answer: the code, not only the status.
    const seenWithin1s = async (what, change, code) => {
      const sentAt = Date.now();
      const out = await change();
      await eventually(
        async () => {
          const r = await chat(b, k.key, body());
          if (r.status === 200) return undefined;
          assertOpenAIError(r, code);
          return true;
        },
        { timeoutMs: 1000, intervalMs: 50, what },
      );
      const took = Date.now() - sentAt;
      assert.ok(took <= 1000, `${what}: ${took} ms after the change was sent`);
      return out;
    };
    // B has the team cached for 30 s now; only the invalidation push can make it see this.
    await seenWithin1s('B enforcing the new rpm', async () => ok(await admin(a, adm.token, 'PUT', '/admin/v1/quotas', { team: 'shared', rpm: 2 })),
      { status: 429, code: 'rate_limit_exceeded' });
    // Rotation without overlap: the old secret is refused on B.
    ok(await admin(a, adm.token, 'PUT', '/admin/v1/quotas', { team: 'shared', rpm: 1000 }));
    const rot = await seenWithin1s('old secret refused on B', async () => ok(await admin(a, adm.token, 'POST', `/admin/v1/keys/${k.id}/rotate`, {})),
      { status: 401, code: 'invalid_api_key' });
    assert.equal((await chat(b, rot.key, body())).status, 200);
    // Usage written by B is read through A.
    const u = await eventually(async () => {
      const j = ok(await admin(a, adm.token, 'GET', `/admin/v1/usage?team=shared`));
      return j.total.requests >= 3 ? j : undefined;
    }, { timeoutMs: 5000, what: 'B usage visible on A' });
    assert.ok(u.data.every((d) => d.team === 'shared'));
    // Deleting the team on A: B refuses its keys.
    const deletedAt = Date.now();
    ok(await admin(a, adm.token, 'DELETE', '/admin/v1/teams/shared'));
    const gone = await eventually(async () => {
      const r = await chat(b, rot.key, body());
      return r.status === 200 ? undefined : r;
    }, { timeoutMs: 1000, intervalMs: 50, what: 'deleted team refused on B' });
    assertOpenAIError(gone, { status: 401, code: 'invalid_api_key' });
    assert.ok(Date.now() - deletedAt <= 1000, `deleted team refused on B ${Date.now() - deletedAt} ms after the deletion was sent`);
    // The listing on B shows what A did.
    const names = ok(await admin(b, adm.token, 'GET', '/admin/v1/teams')).data.map((t) => t.name);
    assert.deepEqual(names, ['cfgteam']);
  });
});
