// The admin API fed garbage: every malformed key request is refused with an OpenAI-shaped 400
// naming the problem, nothing is created, and the API keeps serving good requests.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { assertOpenAIError, fetchT, rawExchange, serverYaml, startGateway } from './lib/gateway.mjs';
import { admin, adminToken, chat } from './lib/policy_helpers.mjs';

describe('admin API: bad input', () => {
  const tok = adminToken();
  let gw;
  before(async () => {
    gw = await startGateway(serverYaml({ openAuth: false, limits: { max_body_bytes: 4096 } }) +
      `auth:\n  admin_tokens:\n${tok.yaml}` +
      'providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: mock-gpt, provider: mock}\nteams:\n  - {name: search}\n');
  });
  after(async () => {
    await gw?.stop();
  });

  const raw = (body, contentType = 'application/json') =>
    fetchT(`${gw.adminUrl}/admin/v1/keys`, {
      method: 'POST', headers: { authorization: `Bearer ${tok.token}`, 'content-type': contentType }, body,
    }).then(async (r) => ({ status: r.status, text: await r.text() }));

  test('bodies that are not a JSON object: 400 invalid_json', async () => {
    for (const body of ['', 'not json', '{"team":', '[]', '"search"', 'null', '{"team":"search"}x']) {
      const r = await raw(body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.text}`);
      assertOpenAIError({ status: r.status, json: JSON.parse(r.text) }, { status: 400, code: 'invalid_json' });
    }
  });

  test('wrong fields: 400 invalid_value with the reason', async () => {
    const cases = [
      [{}, /team \(string\) is required/],
      [{ team: 7 }, /team \(string\) is required/],
      [{ team: '' }, /team \(string\) is required/],
      [{ team: 'search', name: 5 }, /name must be a string/],
      [{ team: 'search', models: 'gpt-*' }, /models must be a list/],
      [{ team: 'search', models: [1] }, /models must be a list/],
      [{ team: 'search', expires_unix: -1 }, /expires_unix must be a non-negative integer/],
      [{ team: 'search', limits: [] }, /limits must be an object/],
      [{ team: 'search', limits: { rpm: -5 } }, /limits\.rpm must be a non-negative integer/],
      [{ team: 'search', limits: { rpm: 1.5 } }, /limits\.rpm must be a non-negative integer/],
      [{ team: 'search', limits: { rpn: 5 } }, /limits\.rpn: unknown field/],
      // The config file's bounds: past them the script's packed figures lose their scope and the
      // headers print negative limits.
      [{ team: 'search', limits: { rpm: 1000000001 } }, /limits\.rpm must be at most 1000000000/],
      [{ team: 'search', limits: { tpm: 9223372036854775808 } }, /limits\.tpm must be at most 1000000000000/],
      [{ team: 'search', limits: { concurrency: 1000001 } }, /limits\.concurrency must be at most 1000000/],
      [{ team: 'search', budget: 5 }, /budget must be an object/],
      [{ team: 'search', budget: { period: 'daily' } }, /budget\.usd must be a number/],
      [{ team: 'search', budget: { usd: 1e12 } }, /budget\.usd must be a number from 0 to 9000000/],
      [{ team: 'search', budget: { usd: 5, period: 'weekly' } }, /budget\.period must be daily, monthly or total/],
      [{ team: 'search', budget: { usd: 5, soft: 2 } }, /budget\.soft must be a fraction/],
      // Unknown fields are refused, not dropped: a top-level rpm was a key with no limits at all,
      // a misspelt period a monthly budget.
      [{ team: 'search', rpm: 60 }, /rpm: unknown field/],
      [{ team: 'search', budget: { usd: 5, perod: 'daily' } }, /budget\.perod: unknown field/],
      // A key expired at birth; a name that would write escape sequences on an admin's terminal.
      [{ team: 'search', expires_unix: 1 }, /expires_unix is in the past/],
      [{ team: 'search', expires_unix: Math.floor(Date.now() / 1000) - 60 }, /expires_unix is in the past/],
      [{ team: 'search', name: 'ci\u001b[2J\u001b[31mjob' }, /name must not contain control characters/],
      [{ team: 'search', name: 'line\nbreak' }, /name must not contain control characters/],
      [{ team: 'search', name: 'n'.repeat(129) }, /name must be at most 128 bytes/],
    ];
    for (const [body, why] of cases) {
      const r = await admin(gw, tok.token, 'POST', '/admin/v1/keys', body);
      assertOpenAIError(r, { status: 400, code: 'invalid_value' });
      assert.match(r.json.error.message, why, JSON.stringify(body));
      assert.equal(r.json.key, undefined);
    }
    const unknownTeam = await admin(gw, tok.token, 'POST', '/admin/v1/keys', { team: 'nosuch' });
    assertOpenAIError(unknownTeam, { status: 400, code: 'invalid_value', param: 'team' });
  });

  test('odd URLs and values: rotate without POST or without an id, a huge usage bound, raw bytes, a bad quota budget', async () => {
    const call = (method, path, body) => admin(gw, tok.token, method, path, body);
    const k = await call('POST', '/admin/v1/keys', { team: 'search', name: 'odd' });
    assert.equal(k.status, 201, k.text);
    // GET or DELETE on a rotation URL is no rotation (the body it would read does not exist).
    for (const m of ['GET', 'DELETE']) {
      const r = await call(m, `/admin/v1/keys/${k.json.id}/rotate`);
      assertOpenAIError(r, { status: 404, code: 'not_found' });
    }
    assertOpenAIError(await call('POST', '/admin/v1/keys/rotate'), { status: 404, code: 'not_found' });
    // A misspelt overlap read as none would cut the old secret off at once: refused, not rotated.
    for (const field of ['overlap', 'overlap_secs']) {
      const r = await call('POST', `/admin/v1/keys/${k.json.id}/rotate`, { [field]: 3600 });
      assertOpenAIError(r, { status: 400, code: 'invalid_value', param: field });
      assert.match(r.json.error.message, new RegExp(`${field}: unknown field`));
      assert.equal(r.json.key, undefined);
    }
    const still = await chat(gw, k.json.key, { model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(still.status, 200, 'the secret still works: no rotation was made');
    // Unix seconds past year 9999 overflowed to a bound that passed the 400-day check.
    const huge = await call('GET', '/admin/v1/usage?from=9223372036854776&to=9223372036854777');
    assertOpenAIError(huge, { status: 400, code: 'invalid_value' });
    // A quota above the config file's bound is refused, and the stored limits stay as they were.
    for (const [field, value] of [['rpm', 1e10], ['tpm', 2 ** 63], ['concurrency', 2e6]]) {
      const big = await call('PUT', '/admin/v1/quotas', { team: 'search', key_id: k.json.id, [field]: value });
      assertOpenAIError(big, { status: 400, code: 'invalid_value' });
      assert.match(big.json.error.message, new RegExp(`${field} must be at most`), big.text);
    }
    assert.deepEqual((await call('GET', `/admin/v1/keys/${k.json.id}`)).json.limits, { rpm: 0, tpm: 0, concurrency: 0 });
    // A budget period for a key that has no budget says so, as for a team.
    const nobudget = await call('PUT', '/admin/v1/quotas', { team: 'search', key_id: k.json.id, budget: { period: 'daily' } });
    assertOpenAIError(nobudget, { status: 400, code: 'invalid_value' });
    assert.match(nobudget.json.error.message, /has no budget/);
    // An empty key id (a script's unset variable) would have set or shown the whole team's quota.
    for (const key_id of ['', '  ']) {
      const r = await call('PUT', '/admin/v1/quotas', { team: 'search', key_id, budget: { usd: 0 } });
      assertOpenAIError(r, { status: 400, code: 'invalid_value' });
      assert.match(r.json.error.message, /key_id must not be empty/);
    }
    assert.equal((await call('GET', '/admin/v1/quotas?team=search')).json.budget, null, 'the team kept its (absent) budget');
    for (const path of ['/admin/v1/quotas?team=search&key=', '/admin/v1/budget?team=search&key=', '/admin/v1/usage?key='])
      assertOpenAIError(await call('GET', path), { status: 400, code: 'invalid_value', param: 'key' });
    // Reads answer GET only: another method is no read (and not audited as one).
    for (const [m, path] of [['DELETE', '/admin/v1/usage'], ['POST', '/admin/v1/budget'], ['PUT', '/admin/v1/usage']])
      assertOpenAIError(await call(m, path, m === 'DELETE' ? undefined : {}), { status: 404, code: 'not_found' });
    // Raw bytes that are no UTF-8 in the URL, echoed by the 404: the error body is still JSON text.
    const res = await rawExchange(gw.adminPort, [Buffer.concat([Buffer.from('GET /admin/v1/nope'), Buffer.from([0xff, 0xfe]),
      Buffer.from(` HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok.token}\r\nConnection: close\r\n\r\n`)])],
    { timeoutMs: 4000, stopWhenComplete: true });
    assert.equal(res.response?.status, 404, res.text);
    const text = new TextDecoder('utf-8', { fatal: true }).decode(res.data.subarray(res.data.indexOf('\r\n\r\n') + 4));
    assert.equal(JSON.parse(text).error.code, 'not_found');
    assert.match(JSON.parse(text).error.message, /nope\ufffd\ufffd/);
    // The API keeps serving.
    assert.equal((await call('GET', `/admin/v1/keys/${k.json.id}`)).status, 200);
  });

  test('an oversized body is refused with 413 and the connection closed; the API keeps serving', async () => {
    const r = await raw(JSON.stringify({ team: 'search', name: 'x'.repeat(10000) }));
    assert.equal(r.status, 413, r.text);
    const ok = await admin(gw, tok.token, 'POST', '/admin/v1/keys', { team: 'search', name: 'after garbage' });
    assert.equal(ok.status, 201, ok.text);
    assert.match(ok.json.key, /^tg_[A-Za-z0-9]+_[A-Za-z0-9]+$/);
  });

  test('malformed credentials to the admin API: 401, never echoed', async () => {
    for (const auth of ['Bearer', 'Bearer ', 'Basic abc', `Bearer ${tok.token}x`, `bearer  ${'z'.repeat(500)}`]) {
      const r = await fetchT(`${gw.adminUrl}/admin/v1/keys/abc`, { headers: { authorization: auth } });
      const text = await r.text();
      assert.equal(r.status, 401, `${auth.slice(0, 20)} → ${text}`);
      assert.ok(!text.includes(tok.token) && !text.includes('zzzz'), text);
    }
  });
});
