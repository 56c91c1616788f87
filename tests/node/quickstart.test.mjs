// The shipped quickstart config: a demo team and key are created at start, the key is printed
// once on stdout and handed to deploy/quickstart through the (owner-only) ready file, calls
// without it are refused, and the demo team's budget is charged.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';

import OpenAI from 'openai';

import { REPO } from './lib/paths.mjs';
import { GATEWAY_BIN, startGateway } from './lib/gateway.mjs';

test('quickstart.yaml: demo key and admin token printed once; calls billed to team demo and audited', async () => {
  const yaml = readFileSync(join(REPO, 'config/examples/quickstart.yaml'), 'utf8')
    .replace('127.0.0.1:8080', '127.0.0.1:0').replace('127.0.0.1:9090', '127.0.0.1:0');
  const gw = await startGateway(yaml);
  try {
    const key = gw.ready.demo_key;
    assert.match(key, /^tg_[A-Za-z0-9]+_[A-Za-z0-9]+$/);
    assert.equal(statSync(gw.readyPath).mode & 0o077, 0, 'ready file must be owner-only');
    // The banner reaches our end of the pipe on its own schedule: wait for it (bounded).
    const printed = await gw.waitForStdout(/Demo API key \(team demo, shown once\): (\S+)/);
    assert.equal(printed[1], key);

    const client = new OpenAI({ apiKey: key, baseURL: gw.baseURL, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 });
    assert.equal(r.usage.completion_tokens, 3);

    const anonymous = new OpenAI({ apiKey: 'sk-not-a-tollgate-key', baseURL: gw.baseURL, maxRetries: 0 });
    await assert.rejects(anonymous.models.list(), (e) => e instanceof OpenAI.AuthenticationError);

    const m = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(m, /tollgate_policy_decisions_total\{decision="admitted"\} 1\b/);

    // The admin token works with tollgatectl; the audit directory is printed beside it.
    const token = gw.ready.admin_token;
    assert.match(token, /^tga_[0-9a-f]{48}$/);
    await gw.waitForStdout(/Audit trail: /);
    assert.ok(gw.stdout().includes(`Admin token for tollgatectl (shown once): ${token}`), gw.stdout());
    assert.ok(gw.stdout().includes(`Audit trail: ${gw.ready.audit_dir}`), gw.stdout());
    const ctl = join(dirname(GATEWAY_BIN), 'tollgatectl');
    const shown = JSON.parse(execFileSync(ctl, ['--url', gw.adminUrl, '--json', 'quota', 'show', '--team', 'demo'],
      { env: { ...process.env, TOLLGATE_ADMIN_TOKEN: token } }).toString());
    assert.equal(shown.team, 'demo');
    await gw.stopClean();
    const verified = execFileSync(ctl, ['audit', 'verify', '--dir', gw.ready.audit_dir]).toString();
    assert.match(verified, /^audit verify: OK/);
    const csv = execFileSync(ctl, ['audit', 'export', '--dir', gw.ready.audit_dir, '--team', 'demo', '--format', 'csv']).toString();
    assert.equal(csv.trim().split('\n').length, 2, csv);  // the header and the one call of team demo
  } finally {
    await gw.stop();
  }
});
