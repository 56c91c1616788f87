// The shipped quickstart config: a demo team and key are created at start, the key is printed
// once on stdout and handed to deploy/quickstart through the (owner-only) ready file, calls
// without it are refused, and the demo team's budget is charged.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';

import OpenAI from 'openai';

import { REPO } from './lib/paths.mjs';
import { eventually, GATEWAY_BIN, startGateway } from './lib/gateway.mjs';
import { admin, adminToken } from './lib/policy_helpers.mjs';

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

    // The printed token lives on in stdout, the ready file and container logs: a reload to a
    // config with admin tokens of its own retires it, for good (also when the quickstart config
    // comes back), while the config's own token works.
    const reloads = async () => Number(/tollgate_config_reloads_total\{result="success"\} (\d+)/
      .exec(await (await fetch(`${gw.adminUrl}/metrics`)).text())?.[1] ?? -1);
    const ops = adminToken();
    assert.equal((await admin(gw, token, 'GET', '/admin/v1/teams')).status, 200, 'the quickstart token works before');
    gw.writeConfig(yaml.replace('auth:\n  demo_key: true\n', `auth:\n  demo_key: true\n  admin_tokens:\n${ops.yaml}`));
    gw.signal('SIGHUP');
    await eventually(async () => (await reloads()) === 1, { what: 'the reload with admin_tokens' });
    assert.equal((await admin(gw, ops.token, 'GET', '/admin/v1/teams')).status, 200);
    assert.equal((await admin(gw, token, 'GET', '/admin/v1/teams')).status, 401, 'the quickstart token is retired');
    gw.writeConfig(yaml);
    gw.signal('SIGHUP');
    await eventually(async () => (await reloads()) === 2, { what: 'the reload back to quickstart.yaml' });
    // (quickstart.yaml names no admin token: without the retired one, the admin API is off.)
    const off = await admin(gw, token, 'GET', '/admin/v1/teams');
    assert.equal(off.status, 403, 'a retired token stays retired');
    assert.equal(off.json.error.code, 'admin_api_disabled');
    await gw.waitForStderr(/the quickstart admin token is retired/);
    await gw.stopClean();
    const verified = execFileSync(ctl, ['audit', 'verify', '--dir', gw.ready.audit_dir]).toString();
    assert.match(verified, /^audit verify: OK/);
    const csv = execFileSync(ctl, ['audit', 'export', '--dir', gw.ready.audit_dir, '--team', 'demo', '--format', 'csv']).toString();
    assert.equal(csv.trim().split('\n').length, 2, csv);  // the header and the one call of team demo
  } finally {
    await gw.stop();
  }
});

test('deploy/quickstart: every command it prints works as printed; SIGTERM drains and it exits 0', { timeout: 60000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-quickstart-'));
  const config = join(dir, 'quickstart.yaml');
  writeFileSync(config, readFileSync(join(REPO, 'config/examples/quickstart.yaml'), 'utf8')
    .replace('127.0.0.1:8080', '127.0.0.1:0').replace('127.0.0.1:9090', '127.0.0.1:0'));
  // TOLLGATE_BIN: the binary under test, so the script neither installs nor builds.
  const child = spawn(join(REPO, 'deploy', 'quickstart'), [], {
    env: { ...process.env, TOLLGATE_BIN: GATEWAY_BIN, TOLLGATE_CONFIG: config, TOLLGATE_AUDIT_DIR: join(dir, 'audit trail') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const exited = once(child, 'exit');
  const sh = (cmd) => execFileSync('bash', ['-c', cmd], { timeout: 15000 }).toString();
  try {
    await eventually(() => out.includes('Press Ctrl-C to stop'), { timeoutMs: 30000, intervalMs: 50, what: `the banner (stdout ${out}, stderr ${err})` });
    const banner = out.slice(out.indexOf('Tollgate is running'));
    // A printed command: from its first line to the end of its backslash continuations.
    const command = (after) => {
      const lines = banner.slice(banner.indexOf(after) + after.length).split('\n').map((l) => l.trim());
      const start = lines.findIndex((l) => l.length > 0);
      let cmd = '';
      for (let i = start; i < lines.length; i++) {
        cmd += lines[i].replace(/\\$/, ' ');
        if (!lines[i].endsWith('\\')) break;
      }
      return cmd;
    };
    const key = /Demo key for team "demo" \([^)]*\): (tg_\S+)/.exec(banner)?.[1];
    assert.ok(key, banner);

    const chat = JSON.parse(sh(command('Try it:')));
    assert.equal(chat.object, 'chat.completion', JSON.stringify(chat));
    assert.ok(chat.choices[0].message.content.length > 0);
    const stream = sh(command('Streaming:'));
    assert.match(stream, /^data: \{.*"chat\.completion\.chunk"/m);
    assert.match(stream, /^data: \[DONE\]$/m);
    const models = JSON.parse(sh(command('Models:')));
    assert.deepEqual(models.data.map((m) => m.id).sort(), ['mock-embed', 'mock-gpt']);
    // Without the key: 401, as the banner says.
    const anon = JSON.parse(sh(command('Try it:').replace(/-H 'Authorization: Bearer [^']*'/, '')));
    assert.equal(anon.error.code, 'invalid_api_key');
    const metrics = sh(command('Metrics:'));
    assert.match(metrics, /^tollgate_policy_decisions_total\{decision="admitted"\} [1-9]/m);

    // The admin lines: export, then tollgatectl.
    const exportLine = /^\s*(export TOLLGATE_ADMIN_TOKEN=tga_\S+ TOLLGATE_ADMIN_URL=http:\/\/127\.0\.0\.1:\d+)$/m.exec(banner)?.[1];
    assert.ok(exportLine, banner);
    const ctlLines = banner.split('\n').map((l) => l.trim()).filter((l) => /tollgatectl (key create|quota show) /.test(l));
    assert.equal(ctlLines.length, 2, banner);
    assert.match(sh(`${exportLine}; ${ctlLines[0]}`), /tg_[A-Za-z0-9]+_[A-Za-z0-9]+/);
    assert.match(sh(`${exportLine}; ${ctlLines[1]}`), /demo/);

    child.kill('SIGTERM');
    const [code, signal] = await exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, `stderr: ${err}`);
    // The audit lines, once the gateway has stopped: the trail verifies and exports.
    const auditLines = banner.split('\n').map((l) => l.trim()).filter((l) => /tollgatectl audit (verify|export) /.test(l));
    assert.equal(auditLines.length, 2, banner);
    assert.match(sh(auditLines[0]), /^audit verify: OK/);
    assert.ok(sh(auditLines[1]).trim().split('\n').length >= 3, 'a header and the calls above');
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
