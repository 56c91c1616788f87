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
