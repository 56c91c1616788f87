// Teams, keys, limits and prices reload with SIGHUP, without a restart: a raised limit admits at
// once (the window keeps its count), a key removed from the file is refused, a price change
// applies to the next call.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { eventually, serverYaml, startGateway } from './lib/gateway.mjs';
import { adminToken, chat, settledBudget, staticKey } from './lib/policy_helpers.mjs';

test('SIGHUP: new limits, removed keys and new prices apply to the next call', { timeout: 30000 }, async () => {
  const tok = adminToken();
  const a = staticKey('reloada');
  const b = staticKey('reloadb');
  const config = ({ rpm, keys, price }) =>
    serverYaml({ openAuth: false, freePrices: false, workers: 1 }) +
    `auth:\n  admin_tokens:\n${tok.yaml}` +
    'providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: mock-gpt, provider: mock}\n' +
    `prices:\n  mock-gpt: {input: ${price}, output: ${price}}\n` +
    `teams:\n  - name: t\n    limits: {rpm: ${rpm}}\n    budget: {usd: 1000, period: total}\n` +
    `keys:\n${keys.map((k) => `  - {id: ${k.id}, team: t, digest: "${k.digest}"}\n`).join('')}`;
  const gw = await startGateway(config({ rpm: 2, keys: [a, b], price: 1000 }));
  const body = { model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 };
  try {
    assert.equal((await chat(gw, a.full, body)).status, 200);
    const before = await settledBudget(gw, tok.token, 't');
    assert.equal((await chat(gw, b.full, body)).status, 200);
    assert.equal((await chat(gw, a.full, body)).status, 429, 'rpm 2 reached');
    const afterTwo = await settledBudget(gw, tok.token, 't');
    const perCall = afterTwo.spent_nano - before.spent_nano;
    assert.ok(perCall > 0);

    gw.writeConfig(config({ rpm: 3, keys: [a], price: 2000 }));
    gw.signal('SIGHUP');
    await eventually(async () => (await chat(gw, b.full, body)).status === 401, { timeoutMs: 5000, what: 'key b refused after reload' });
    assert.equal((await chat(gw, a.full, body)).status, 200, 'rpm 3: one more call fits the window');
    assert.equal((await chat(gw, a.full, body)).status, 429, 'and only one');
    const last = await settledBudget(gw, tok.token, 't');
    assert.equal(last.spent_nano - afterTwo.spent_nano, 2 * perCall, 'the new price (twice the old) applies');
  } finally {
    await gw.stop();
  }
});

test('SIGHUP: settings the store keeps, and a new pepper, are named in a warning', { timeout: 30000 }, async () => {
  // The store is made once: a reload that changes its database, credentials, TLS or settlement
  // journal is not applied, and says so. A pepper change is applied, and locks out every API key
  // digested under the old one: said too.
  const config = ({ db, journal, pepper }) =>
    serverYaml({ workers: 1, openAuth: false }) +
    `auth:\n  pepper: "${pepper}"\n` +
    `store:\n  redis: {db: ${db}}\n${journal ? `  settlement_journal: ${journal}\n` : ''}` +
    'providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: mock-gpt, provider: mock}\n';
  const gw = await startGateway(config({ db: 0, journal: '', pepper: 'pepper-one-0123456789' }));
  try {
    let from = gw.stderr().length;
    gw.writeConfig(config({ db: 3, journal: '', pepper: 'pepper-one-0123456789' }));
    gw.signal('SIGHUP');
    await gw.waitForStderr(/"config reloaded"/, 5000, from);
    assert.match(gw.stderr().slice(from), /store\.settlement_journal\) change only on restart/);
    assert.doesNotMatch(gw.stderr().slice(from), /auth\.pepper changed/);

    from = gw.stderr().length;
    gw.writeConfig(config({ db: 3, journal: 'settle.journal', pepper: 'pepper-one-0123456789' }));
    gw.signal('SIGHUP');
    await gw.waitForStderr(/"config reloaded"/, 5000, from);
    assert.match(gw.stderr().slice(from), /change only on restart/);

    from = gw.stderr().length;
    gw.writeConfig(config({ db: 3, journal: 'settle.journal', pepper: 'pepper-two-0123456789' }));
    gw.signal('SIGHUP');
    await gw.waitForStderr(/"config reloaded"/, 5000, from);
    const said = gw.stderr().slice(from);
    assert.match(said, /auth\.pepper changed: every key whose hmac-sha256 digest was made under the old pepper/);
    assert.doesNotMatch(said, /change only on restart/, 'the store settings are as before');
    assert.doesNotMatch(said, /pepper-(one|two)/, 'never the pepper itself');
  } finally {
    await gw.stop();
  }
});
