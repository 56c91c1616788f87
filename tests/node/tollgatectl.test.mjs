// tollgatectl, the admin CLI, against a real gateway: keys created, shown, used and revoked; budgets;
// --json; every exit code. Commands the gateway does not serve yet (teams, key list/rotate, quota
// set, usage) run against a scripted admin server, which checks the requests tollgatectl sends.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { serverYaml, startGateway } from './lib/gateway.mjs';
import { GATEWAY_BIN } from './lib/paths.mjs';
import { admin, adminToken, chat, settledBudget, splitKey } from './lib/policy_helpers.mjs';

/** The CLI under test: next to the gateway binary (TOLLGATECTL_BIN overrides). */
const CTL_BIN = process.env.TOLLGATECTL_BIN ?? join(dirname(GATEWAY_BIN), 'tollgatectl');

/**
 * Runs tollgatectl to completion with exactly `env` (plus PATH): nothing from the caller's
 * environment such as a real TOLLGATE_ADMIN_TOKEN leaks in. Returns `{code, signal, stdout, stderr, ms}`.
 */
async function ctl(args, env = {}, { timeoutMs = 15000, input } = {}) {
  const started = Date.now();
  const child = spawn(CTL_BIN, args, {
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, ...env },
  });
  if (input !== undefined) child.stdin.end(input);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await once(child, 'close');
  clearTimeout(timer);
  return { code, signal, stdout, stderr, ms: Date.now() - started };
}

/** Asserts the exit code, showing both streams when it differs. */
function assertExit(r, code, what) {
  assert.equal(r.code, code, `${what}: exit ${r.code} (signal ${r.signal})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

/** Two-column output (`field   value`) as an object. */
function fields(stdout) {
  const out = {};
  for (const line of stdout.split('\n')) {
    if (!line) continue;
    const m = /^(\S+) {2,}(.*)$/.exec(line);
    assert.ok(m, `not a two-column line: ${JSON.stringify(line)}`);
    out[m[1]] = m[2];
  }
  return out;
}

/** Table output: header row and data rows split on runs of 2+ spaces. */
function table(stdout) {
  const lines = stdout.split('\n').filter((l) => l !== '');
  return lines.map((l) => l.split(/ {2,}/));
}

/** Nano-USD as tollgatectl prints it: exact, at least two decimals. */
function usd(nano) {
  const neg = nano < 0;
  const a = BigInt(Math.abs(nano));
  let frac = (a % 1000000000n).toString().padStart(9, '0');
  while (frac.length > 2 && frac.endsWith('0')) frac = frac.slice(0, -1);
  return `${neg ? '-' : ''}$${a / 1000000000n}.${frac}`;
}

/** A loopback port with nothing listening on it. */
async function closedPort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

const HINT = /Run 'tollgatectl [^']*--help' for usage\./;
const MSGS = [{ role: 'user', content: 'Count to three.' }];
const body = { model: 'mock-gpt', messages: MSGS, max_tokens: 4 };

// ---------------------------------------------------------------------------------------------

describe('tollgatectl against a gateway', () => {
  const adm = adminToken();
  let gw;
  let env;
  let tmp;

  before(async () => {
    const yaml =
      serverYaml({ workers: 2, openAuth: false, freePrices: false }) +
      `auth:
  required: true
  admin_tokens:
${adm.yaml}prices:
  "mock-*": {input: 1000, output: 2000}
store:
  type: memory
teams:
  - name: search
    models: ["mock-*"]
    budget: {usd: 10, period: daily, soft: 0.8}
providers:
  - {name: mock, type: mock}
models:
  - {name: mock-gpt, provider: mock}
`;
    gw = await startGateway(yaml);
    env = { TOLLGATE_ADMIN_URL: gw.adminUrl, TOLLGATE_ADMIN_TOKEN: adm.token };
    tmp = mkdtempSync(join(tmpdir(), 'tollgatectl-test-'));
  });

  after(async () => {
    try {
      if (gw?.alive) await gw.stopClean();
    } finally {
      await gw?.kill();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('key create → show → revoke: the key answers calls until it is revoked, then 401', { timeout: 30000 }, async () => {
    const created = await ctl(
      ['key', 'create', '--team', 'search', '--name', 'ctl-test', '--models', 'mock-*', '--rpm', '50', '--tpm=9000',
        '--budget-usd', '0.5', '--period', 'daily', '--soft', '0.8'],
      env,
    );
    assertExit(created, 0, 'key create');
    assert.match(created.stderr, /shown only this once/);
    const f = fields(created.stdout);
    const { id, secret } = splitKey(f.key);
    assert.equal(f.id, id);
    assert.equal(f.team, 'search');
    assert.equal(f.name, 'ctl-test');
    assert.equal(f.models, 'mock-*');
    assert.equal(f.enabled, 'true');
    assert.equal(f['limits.rpm'], '50');
    assert.equal(f['limits.tpm'], '9000');
    assert.equal(f['budget.usd'], '0.5');
    assert.equal(f['budget.period'], 'daily');
    assert.equal(f.expires_unix, 'never');
    assert.match(f.created_unix, /^\d+ \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)$/);
    // The gateway stored what the options said.
    const rec = await admin(gw, adm.token, 'GET', `/admin/v1/keys/${id}`);
    assert.equal(rec.status, 200, rec.text);
    assert.deepEqual(
      [rec.json.name, rec.json.models, rec.json.limits, rec.json.budget],
      ['ctl-test', ['mock-*'], { rpm: 50, tpm: 9000, concurrency: 0 }, { usd: 0.5, period: 'daily', soft: 0.8 }],
    );

    assert.equal((await chat(gw, f.key, body)).status, 200, 'the new key works');

    const shown = await ctl(['key', 'show', id], env);
    assertExit(shown, 0, 'key show');
    assert.equal(fields(shown.stdout).enabled, 'true');
    assert.equal(fields(shown.stdout).id, id);
    assert.ok(!shown.stdout.includes(secret) && !shown.stderr.includes(secret), 'key show never prints the secret');

    const revoked = await ctl(['key', 'revoke', id], env);
    assertExit(revoked, 0, 'key revoke');
    assert.equal(fields(revoked.stdout).enabled, 'false');

    const refused = await chat(gw, f.key, body);
    assert.equal(refused.status, 401, refused.text);
    assert.equal(fields((await ctl(['key', 'show', id], env)).stdout).enabled, 'false');
  });

  test('--json prints the gateway\'s JSON unchanged on one line, before or after the command', { timeout: 30000 }, async () => {
    const created = await ctl(['--json', 'key', 'create', '--team', 'search', '--name', 'json'], env);
    assertExit(created, 0, 'key create --json');
    assert.equal(created.stdout.split('\n').length, 2, `one line: ${created.stdout}`);
    const k = JSON.parse(created.stdout);
    assert.equal(k.team, 'search');
    assert.equal(k.name, 'json');
    assert.equal(splitKey(k.key).id, k.id);
    assert.match(created.stderr, /shown only this once/, 'the warning goes to stderr, even with --json');

    const shown = await ctl(['key', 'show', k.id, '--json'], env);
    assertExit(shown, 0, 'key show --json');
    const direct = await admin(gw, adm.token, 'GET', `/admin/v1/keys/${k.id}`);
    assert.equal(shown.stdout, direct.text + '\n', 'byte for byte what the admin API answers');

    await settledBudget(gw, adm.token, 'search');
    const quota = await ctl(['--json', 'quota', 'show', '--team', 'search'], env);
    assertExit(quota, 0, 'quota show --json');
    const b = await admin(gw, adm.token, 'GET', '/admin/v1/budget?team=search');
    assert.equal(quota.stdout, b.text + '\n');
  });

  test('quota show: spent, reserved, limit and remaining, for a team and for one of its keys', { timeout: 30000 }, async () => {
    const created = await ctl(['--json', 'key', 'create', '--team', 'search', '--budget-usd', '0.5'], env);
    assertExit(created, 0, 'key create');
    const k = JSON.parse(created.stdout);
    const shown = fields((await ctl(['key', 'show', k.id], env)).stdout);
    assert.deepEqual([shown.name, shown.models, shown['budget.usd']], ['-', '-', '0.5'], 'empty values print as "-"');
    assert.equal((await chat(gw, k.key, body)).status, 200);
    const kb = await settledBudget(gw, adm.token, 'search', { key: k.id, pred: (b) => b.spent_nano > 0 });

    const keyQuota = await ctl(['quota', 'show', '--team', 'search', '--key', k.id], env);
    assertExit(keyQuota, 0, 'quota show --key');
    assert.deepEqual(fields(keyQuota.stdout), {
      team: 'search',
      key: k.id,
      spent: usd(kb.spent_nano),
      reserved: '$0.00',
      limit: '$0.50',
      remaining: usd(500000000 - kb.spent_nano),
    });

    const tb = await settledBudget(gw, adm.token, 'search');
    const teamQuota = fields((await ctl(['quota', 'show', '--team=search'], env)).stdout);
    assert.equal(teamQuota.spent, usd(tb.spent_nano));
    assert.equal(teamQuota.limit, '$10.00');
    assert.ok(!('key' in teamQuota));
  });

  test('exit 2: usage errors, each with a hint to --help, and requests the gateway rejects as invalid', { timeout: 30000 }, async () => {
    const cases = [
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['key', 'frob'], /unknown command 'key frob'/],
      [['key'], /'key' needs a command/],
      [['key', 'create'], /'key create' needs --team/],
      [['key', 'create', '--team', 'search', '--bogus', '1'], /unknown option '--bogus' for 'key create'/],
      [['key', 'create', '--team', 'search', '--rpm', 'lots'], /--rpm must be a non-negative integer/],
      [['key', 'create', '--team', 'search', '--period', 'weekly', '--budget-usd', '1'], /--period must be daily, monthly or total/],
      [['key', 'create', '--team', 'search', '--soft', '0.5'], /--period and --soft need --budget-usd/],
      [['key', 'create', '--team', '--name', 'x'], /option '--team' needs a value/],
      [['key', 'show'], /'key show' needs ID/],
      [['key', 'show', 'a', 'b'], /unexpected argument 'b'/],
      [['quota', 'show'], /'quota show' needs --team/],
      [['usage', '--from', 'yesterday'], /--from must be unix seconds or an RFC 3339 time/],
      [['--bogus', 'key', 'show', 'x'], /unknown option '--bogus'/],
      [['--url', 'https://127.0.0.1:1', 'key', 'show', 'x'], /https admin URLs are not supported yet/],
      [['--url', 'ftp://127.0.0.1', 'key', 'show', 'x'], /unsupported scheme 'ftp'/],
    ];
    for (const [args, re] of cases) {
      const r = await ctl(args, env);
      assertExit(r, 2, args.join(' '));
      assert.match(r.stderr, re, args.join(' '));
      assert.match(r.stderr, HINT, `${args.join(' ')}: hint to --help`);
      assert.equal(r.stdout, '', args.join(' '));
    }
    // No arguments at all: the help, on stderr.
    const bare = await ctl([], env);
    assertExit(bare, 2, 'no arguments');
    assert.match(bare.stderr, /^usage: tollgatectl/);

    // The gateway refuses an unknown team with 400 invalid_value: also a usage error.
    const r = await ctl(['key', 'create', '--team', 'nosuchteam'], env);
    assertExit(r, 2, 'unknown team');
    assert.match(r.stderr, /^tollgatectl: .*nosuchteam.* \(invalid_value\)\n/);
    assert.match(r.stderr, HINT);
  });

  test('exit 3: no token, a wrong token, token files', { timeout: 30000 }, async () => {
    const none = await ctl(['key', 'show', 'whatever'], { TOLLGATE_ADMIN_URL: gw.adminUrl });
    assertExit(none, 3, 'no token');
    assert.match(none.stderr, /set TOLLGATE_ADMIN_TOKEN/);

    const blank = await ctl(['key', 'show', 'whatever'], { TOLLGATE_ADMIN_URL: gw.adminUrl, TOLLGATE_ADMIN_TOKEN: '  ' });
    assertExit(blank, 3, 'blank token');

    for (const token of ['wrong-token', adm.token.slice(0, -1)]) {
      const r = await ctl(['quota', 'show', '--team', 'search'], { ...env, TOLLGATE_ADMIN_TOKEN: token });
      assertExit(r, 3, 'wrong token');
      assert.equal(r.stderr, 'tollgatectl: A valid admin token is required (Authorization: Bearer <token>). (invalid_api_key)\n');
      assert.equal(r.stdout, '');
    }

    // --token-file: trimmed, and it wins over the environment.
    const good = join(tmp, 'good.token');
    writeFileSync(good, `${adm.token}\n`, { mode: 0o600 });
    const bad = join(tmp, 'bad.token');
    writeFileSync(bad, 'wrong-token\n');
    const empty = join(tmp, 'empty.token');
    writeFileSync(empty, '\n');
    const withFile = await ctl(['--token-file', good, 'quota', 'show', '--team', 'search'], { TOLLGATE_ADMIN_URL: gw.adminUrl });
    assertExit(withFile, 0, 'good token file');
    assert.equal(fields(withFile.stdout).team, 'search');
    assertExit(await ctl(['--token-file', bad, 'quota', 'show', '--team', 'search'], env), 3, 'bad token file over a good env token');
    const emptyFile = await ctl(['--token-file', empty, 'quota', 'show', '--team', 'search'], env);
    assertExit(emptyFile, 3, 'empty token file');
    assert.match(emptyFile.stderr, /is empty/);
    assertExit(await ctl(['--token-file', join(tmp, 'missing'), 'quota', 'show', '--team', 'search'], env), 2, 'missing token file');
    // Not a token: a directory, a device read for ever, a large file; a token others can read
    // works with a warning.
    const big = join(tmp, 'big.token');
    writeFileSync(big, 'x'.repeat(5000), { mode: 0o600 });
    for (const [file, why] of [[tmp, /is not a regular file/], ['/dev/zero', /is not a regular file/], [big, /larger than 4 KiB/]]) {
      const r = await ctl(['--token-file', file, 'quota', 'show', '--team', 'search'], env, { timeoutMs: 10000 });
      assertExit(r, 2, `token file ${file}`);
      assert.match(r.stderr, why);
    }
    const open = join(tmp, 'open.token');
    writeFileSync(open, `${adm.token}\n`, { mode: 0o644 });
    chmodSync(open, 0o644);
    const opened = await ctl(['--token-file', open, 'quota', 'show', '--team', 'search'], { TOLLGATE_ADMIN_URL: gw.adminUrl });
    assertExit(opened, 0, 'a token file others can read');
    assert.match(opened.stderr, /can be read by others \(mode 644\)/);
    assert.doesNotMatch(withFile.stderr, /can be read by others/, 'no warning for a 0600 file');
  });

  test('exit 4: unknown ids and teams on every verb that names one; the caller listener', { timeout: 30000 }, async () => {
    const show = await ctl(['key', 'show', 'nosuchid'], env);
    assertExit(show, 4, 'key show nosuchid');
    assert.equal(show.stderr, "tollgatectl: No key with id 'nosuchid'. (not_found)\n");
    assert.equal(show.stdout, '');
    assertExit(await ctl(['key', 'revoke', 'nosuchid'], env), 4, 'key revoke nosuchid');
    const team = await ctl(['quota', 'show', '--team', 'nosuchteam'], env);
    assertExit(team, 4, 'quota show nosuchteam');
    assert.match(team.stderr, /No team 'nosuchteam'/);

    // Unknown teams and ids on the verbs that name one.
    for (const args of [
      ['team', 'show', 'nosuchteam'],
      ['team', 'delete', 'nosuchteam'],
      ['key', 'rotate', 'nosuchid', '--overlap-seconds', '60'],
      ['quota', 'set', '--team', 'nosuchteam', '--rpm', '5'],
    ]) {
      const r = await ctl(args, env);
      assertExit(r, 4, args.join(' '));
      assert.match(r.stderr, /^tollgatectl: no (team|key) .*\(not_found\)\n$/i, args.join(' '));
    }

    // The caller listener is not the admin API.
    const caller = await ctl(['--url', gw.url, 'key', 'show', 'x'], env);
    assertExit(caller, 4, 'caller listener');
    assert.match(caller.stderr, /is not an admin listener/);
    // A whole (leaked) key given to revoke at the wrong listener: tollgatectl sends only its id,
    // so the secret is in neither the answer it prints nor the gateway's logs.
    const leaked = `tg_AbCdEfGh1234_${'s'.repeat(43)}`;
    const wrong = await ctl(['--url', gw.url, 'key', 'revoke', leaked], env);
    assertExit(wrong, 4, 'caller listener, whole key');
    assert.ok(!wrong.stderr.includes('s'.repeat(43)) && !wrong.stdout.includes('s'.repeat(43)), wrong.stderr);
    assert.match(wrong.stderr, /AbCdEfGh1234/);
    assert.ok(!gw.stderr().includes('s'.repeat(43)) && !JSON.stringify(gw.accessLog()).includes('s'.repeat(43)));
  });

  test('exit 5: nothing listening, or a name that does not resolve', { timeout: 30000 }, async () => {
    const port = await closedPort();
    const url = `http://127.0.0.1:${port}`;
    const r = await ctl(['key', 'show', 'x'], { ...env, TOLLGATE_ADMIN_URL: url });
    assertExit(r, 5, 'closed port');
    assert.match(r.stderr, new RegExp(`cannot reach the gateway at ${url}: cannot connect`));
    // --url beats the environment.
    assertExit(await ctl(['--url', url, 'quota', 'show', '--team', 'search'], env), 5, '--url over TOLLGATE_ADMIN_URL');
    const dns = await ctl(['--url', 'http://tollgate-admin.invalid:9090', 'key', 'show', 'x'], env);
    assertExit(dns, 5, 'unresolvable host');
    assert.match(dns.stderr, /cannot (resolve|reach)/);
  });
});

// ---------------------------------------------------------------------------------------------
// A scripted admin server: the answers a gateway with teams, rotation, quotas and usage would give,
// and a record of what tollgatectl asked.

async function startScriptedAdmin() {
  const requests = [];
  const json = (res, status, obj) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
  };
  const notFound = (res, message) =>
    json(res, 404, { error: { message, type: 'invalid_request_error', param: null, code: 'not_found' } });
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8').on('data', (d) => (text += d));
    req.on('end', () => {
      const url = new URL(req.url, 'http://x');
      const rec = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, text };
      try {
        rec.body = text ? JSON.parse(text) : undefined;
      } catch {
        rec.body = 'not json';
      }
      requests.push(rec);
      const p = url.pathname.replace(/^\/prefix/, '');
      const route = `${req.method} ${p}`;
      if (route === 'GET /admin/v1/teams')
        return json(res, 200, {
          data: [
            { name: 'search', models: ['mock-*'], limits: { rpm: 60, tpm: 0, concurrency: 0 }, budget: { usd: 10, period: 'daily', soft: 0.8 } },
            { name: 'free', models: [], limits: { rpm: 0, tpm: 0, concurrency: 0 } },
          ],
        });
      if (route === 'GET /admin/v1/teams/empty') return json(res, 200, {});
      if (route === 'GET /admin/v1/keys' && rec.query.team === 'paged') {
        // Five keys, in pages the server caps at 2 whatever the limit asked (as a gateway may).
        const ids = ['k1', 'k2', 'k3', 'k4', 'k5'].filter((id) => !rec.query.after || id > rec.query.after);
        const page = ids.slice(0, Math.min(2, Number(rec.query.limit)));
        return json(res, 200, {
          object: 'list',
          data: page.map((id) => ({ id, team: 'paged', enabled: true })),
          first_id: page[0] ?? null,
          last_id: page.at(-1) ?? null,
          has_more: ids.length > page.length,
        });
      }
      if (route === 'GET /admin/v1/keys' && rec.query.team === 'stuck')  // more, but never a new cursor
        return json(res, 200, { object: 'list', data: [{ id: 'k1' }], first_id: 'k1', last_id: rec.query.after ?? 'k1', has_more: true });
      if (route === 'GET /admin/v1/keys') return json(res, 200, { data: [] });
      if (route === 'POST /admin/v1/teams') return json(res, 201, rec.body);
      if (route === 'DELETE /admin/v1/teams/a%20b%2Fc') return json(res, 200, { name: 'a b/c', deleted: true });
      if (route === 'GET /admin/v1/teams/boom')
        return json(res, 500, { error: { message: 'The policy store is unavailable.', type: 'server_error', param: null, code: 'policy_store_unavailable' } });
      if (route === 'GET /admin/v1/teams/garbage') {
        res.writeHead(200, { 'content-type': 'text/html' });
        return res.end('<html>hello</html>');
      }
      if (route === 'GET /admin/v1/teams/slow') return; // never answers
      // A change read in full, then the connection cut before any answer (a gateway that made it
      // and could not answer): the CLI cannot know whether it was made.
      if (route === 'POST /admin/v1/keys/cut/rotate' || route === 'DELETE /admin/v1/teams/cut' || route === 'GET /admin/v1/teams/cut' ||
          (route === 'POST /admin/v1/keys' && rec.body?.team === 'cut'))
        return res.socket.destroy();
      if (route === 'GET /admin/v1/teams/nosuch') return notFound(res, "No team 'nosuch'.");
      if (route === 'POST /admin/v1/keys/abc/rotate')
        return json(res, 200, { id: 'abc', team: 'search', enabled: true, key: 'tg_abc_NEWSECRET', old_key_expires_unix: 1767225600 });
      if (route === 'PUT /admin/v1/quotas') return json(res, 200, rec.body);
      if (route === 'GET /admin/v1/usage')
        return json(res, 200, {
          data: [
            { team: 'search', model: 'mock-gpt', requests: 3, prompt_tokens: 24, completion_tokens: 12, cost_usd: 0.25 },
            { team: 'search', model: 'other', requests: 1, prompt_tokens: 8, completion_tokens: 4, cost_usd: 0.125 },
          ],
          total_cost_usd: 0.375,
        });
      return notFound(res, `Unknown admin URL: ${req.method} ${url.pathname}.`);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    last: () => requests[requests.length - 1],
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

describe('tollgatectl key digest: a key for the configuration file, offline', () => {
  test('the digest it prints (plain and with a pepper) authenticates the key at a gateway; nothing else does', { timeout: 30000 }, async () => {
    const secret = randomBytes(24).toString('hex');
    const plain = await ctl(['key', 'digest'], {}, { input: `tg_cfg1_${secret}\n` });
    assertExit(plain, 0, 'key digest');
    assert.match(plain.stdout, /^id: cfg1\ndigest: sha256:[0-9a-f]{64}\n$/);
    assert.ok(!plain.stdout.includes(secret) && !plain.stderr.includes(secret), 'the secret was echoed');
    // A bare secret gives the same digest, without the id.
    const bare = await ctl(['key', 'digest'], {}, { input: secret });
    assertExit(bare, 0, 'key digest of a bare secret');
    assert.equal(bare.stdout, plain.stdout.split('\n')[1] + '\n');
    const dir = mkdtempSync(join(tmpdir(), 'tollgatectl-digest-'));
    // Spaces at both ends are part of the pepper (the gateway keeps them): only the newline goes.
    const pepper = ` ${randomBytes(16).toString('hex')}\t `;
    writeFileSync(join(dir, 'pepper'), `${pepper}\n`);
    const peppered = await ctl(['key', 'digest', '--pepper-file', join(dir, 'pepper')], {}, { input: `tg_cfg2_${secret}` });
    assertExit(peppered, 0, 'key digest --pepper-file');
    const digestOf = (r) => /digest: (\S+)/.exec(r.stdout)[1];
    assert.match(digestOf(peppered), /^hmac-sha256:[0-9a-f]{64}$/);
    const yaml =
      serverYaml({ workers: 1, openAuth: false }) +
      `auth:
  required: true
  pepper: "file:${join(dir, 'pepper')}"
teams:
  - name: cfg
providers:
  - {name: mock, type: mock}
models:
  - {name: mock-gpt, provider: mock}
keys:
  - {id: cfg1, team: cfg, digest: "${digestOf(plain)}"}
  - {id: cfg2, team: cfg, digest: "${digestOf(peppered)}"}
`;
    const gw = await startGateway(yaml);
    try {
      const body = { model: 'mock-gpt', messages: [{ role: 'user', content: 'hi' }] };
      assert.equal((await chat(gw, `tg_cfg1_${secret}`, body)).status, 200);
      assert.equal((await chat(gw, `tg_cfg2_${secret}`, body)).status, 200);
      assert.equal((await chat(gw, `tg_cfg1_${secret}0`, body)).status, 401, 'another secret under the same id');
    } finally {
      await gw.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('wrong input: nothing, a malformed key, a secret a key cannot carry, an empty or missing pepper file: exit 2, the input never echoed', { timeout: 30000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgatectl-digest-'));
    try {
      writeFileSync(join(dir, 'newline'), '\n');
      const cases = [
        [[], '', /got none/],
        [[], 'tg_bad-id_SECRETVALUE1', /not a key of the form/],
        [[], `tg_${'i'.repeat(65)}_SECRETVALUE2`, /not a key of the form/],
        [[], 'SECRET+VALUE/3=', /letters and digits/],
        [[], 'S'.repeat(257), /letters and digits/],
        [['--pepper-file', join(dir, 'newline')], 'SECRETVALUE4', /is empty/],
        [['--pepper-file', join(dir, 'missing')], 'SECRETVALUE5', /cannot read pepper file/],
      ];
      for (const [extra, input, why] of cases) {
        const r = await ctl(['key', 'digest', ...extra], {}, { input });
        assertExit(r, 2, `key digest with ${JSON.stringify(input.slice(0, 30))}`);
        assert.match(r.stderr, why);
        assert.equal(r.stdout, '');
        if (input) assert.ok(!r.stderr.includes(input.replace(/^tg_[^_]*_/, '')), `the input was echoed: ${r.stderr}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tollgatectl against a scripted admin server (commands the gateway grows later)', () => {
  let srv;
  let env;
  before(async () => {
    srv = await startScriptedAdmin();
    env = { TOLLGATE_ADMIN_URL: srv.url, TOLLGATE_ADMIN_TOKEN: 'tok-123' };
  });
  after(async () => {
    await srv?.close();
  });

  test('team list prints a table; the token is sent as a bearer token', { timeout: 15000 }, async () => {
    const r = await ctl(['team', 'list'], env);
    assertExit(r, 0, 'team list');
    const t = table(r.stdout);
    assert.deepEqual(t[0], ['NAME', 'MODELS', 'LIMITS.RPM', 'LIMITS.TPM', 'LIMITS.CONCURRENCY', 'BUDGET.USD', 'BUDGET.PERIOD', 'BUDGET.SOFT']);
    assert.deepEqual(t[1], ['search', 'mock-*', '60', '0', '0', '10', 'daily', '0.8']);
    assert.deepEqual(t[2], ['free', '-', '0', '0', '0', '-', '-', '-']);
    const q = srv.last();
    assert.equal(`${q.method} ${q.path}`, 'GET /admin/v1/teams');
    assert.equal(q.headers.authorization, 'Bearer tok-123');
    assert.equal(q.headers.host, srv.url.slice('http://'.length));

    const keys = await ctl(['key', 'list', '--team', 'search'], env);
    assertExit(keys, 0, 'key list');
    assert.equal(keys.stdout, '(none)\n');
    assert.deepEqual(srv.last().query, { team: 'search', limit: '1000' });
  });

  test('key list follows the pages to the end; --limit and --after take part of them', { timeout: 15000 }, async () => {
    const idsOf = (stdout) => table(stdout).slice(1).map((row) => row[0]);
    const before = srv.requests.length;
    const all = await ctl(['key', 'list', '--team', 'paged'], env);
    assertExit(all, 0, 'key list over three pages');
    assert.deepEqual(idsOf(all.stdout), ['k1', 'k2', 'k3', 'k4', 'k5']);
    assert.deepEqual(
      srv.requests.slice(before).map((q) => q.query.after ?? '-'),
      ['-', 'k2', 'k4'],
      'each page asked after the last one\'s last_id',
    );
    assert.doesNotMatch(all.stdout, /object|has_more|last_id/, 'no list framing printed under the table');
    assert.equal(all.stderr, '');

    const first = await ctl(['key', 'list', '--team', 'paged', '--limit', '3'], env);
    assertExit(first, 0, 'key list --limit 3');
    assert.deepEqual(idsOf(first.stdout), ['k1', 'k2', 'k3']);
    assert.equal(srv.last().query.limit, '1', 'the last page asks only for what is still wanted');
    assert.match(first.stderr, /more keys follow; list them with --after k3/);
    const rest = await ctl(['key', 'list', '--team', 'paged', '--after', 'k3'], env);
    assertExit(rest, 0, 'key list --after k3');
    assert.deepEqual(idsOf(rest.stdout), ['k4', 'k5']);

    const j = await ctl(['--json', 'key', 'list', '--team', 'paged', '--limit', '4'], env);
    assertExit(j, 0, 'key list --json');
    const body = JSON.parse(j.stdout);
    assert.deepEqual(body.data.map((k) => k.id), ['k1', 'k2', 'k3', 'k4']);
    assert.equal(body.has_more, true);
    assert.equal(body.last_id, 'k4');

    const stuck = await ctl(['key', 'list', '--team', 'stuck'], env);
    assertExit(stuck, 1, 'a server that says there is more but gives no new cursor');
    assert.match(stuck.stderr, /gave no new last_id/);
    for (const bad of [['--limit', '0'], ['--limit', 'x'], ['--after', '']]) {
      const r = await ctl(['key', 'list', '--team', 'paged', ...bad], env);
      assertExit(r, 2, `key list ${bad.join(' ')}`);
    }
  });

  test('team create, team delete, key rotate and quota set send the documented requests', { timeout: 15000 }, async () => {
    const created = await ctl(
      ['team', 'create', 'research', '--models', 'gpt-4o*, mock-*', '--rpm', '60', '--concurrency', '4', '--budget-usd', '12.5', '--period', 'monthly', '--soft', '0.9'],
      env,
    );
    assertExit(created, 0, 'team create');
    let q = srv.last();
    assert.equal(`${q.method} ${q.path}`, 'POST /admin/v1/teams');
    assert.equal(q.headers['content-type'], 'application/json');
    assert.deepEqual(q.body, {
      name: 'research',
      models: ['gpt-4o*', 'mock-*'],
      limits: { rpm: 60, concurrency: 4 },
      budget: { usd: 12.5, period: 'monthly', soft: 0.9 },
    });
    assert.equal(fields(created.stdout)['limits.concurrency'], '4');

    const deleted = await ctl(['team', 'delete', 'a b/c'], env);
    assertExit(deleted, 0, 'team delete');
    assert.equal(srv.last().path, '/admin/v1/teams/a%20b%2Fc', 'the name is one percent-encoded segment');

    const rotated = await ctl(['key', 'rotate', 'abc', '--overlap-seconds', '3600'], env);
    assertExit(rotated, 0, 'key rotate');
    q = srv.last();
    assert.equal(`${q.method} ${q.path}`, 'POST /admin/v1/keys/abc/rotate');
    assert.deepEqual(q.body, { overlap_seconds: 3600 });
    const f = fields(rotated.stdout);
    assert.equal(f.key, 'tg_abc_NEWSECRET');
    assert.equal(f.old_key_expires_unix, '1767225600 (2026-01-01T00:00:00Z)');
    assert.match(rotated.stderr, /shown only this once/);
    await ctl(['key', 'rotate', 'abc'], env);
    assert.deepEqual(srv.last().body, { overlap_seconds: 0 }, 'default overlap: none');

    const set = await ctl(['quota', 'set', '--team', 'search', '--key', 'abc', '--tpm', '1000', '--budget-usd', '2', '--period', 'total'], env);
    assertExit(set, 0, 'quota set');
    q = srv.last();
    assert.equal(`${q.method} ${q.path}`, 'PUT /admin/v1/quotas');
    assert.deepEqual(q.body, { team: 'search', key_id: 'abc', tpm: 1000, budget: { usd: 2, period: 'total' } });
    const n = srv.requests.length;
    assertExit(await ctl(['quota', 'set', '--team', 'search'], env), 2, 'quota set without a limit');
    assert.equal(srv.requests.length, n, 'a usage error sends nothing');
  });

  test('usage: query parameters, a table and its totals; --json unchanged', { timeout: 15000 }, async () => {
    const args = ['usage', '--team', 'search', '--key', 'k 1', '--model', 'gpt-4o', '--from', '2025-01-01T00:00:00+01:00', '--to', '1767225600'];
    const r = await ctl(args, env);
    assertExit(r, 0, 'usage');
    const q = srv.last();
    assert.equal(q.path, '/admin/v1/usage');
    assert.deepEqual(q.query, { team: 'search', key: 'k 1', model: 'gpt-4o', from: '2025-01-01T00:00:00+01:00', to: '1767225600' });
    const [table1, totals] = r.stdout.split('\n\n');
    const t = table(table1);
    assert.deepEqual(t[0], ['TEAM', 'MODEL', 'REQUESTS', 'PROMPT_TOKENS', 'COMPLETION_TOKENS', 'COST_USD']);
    assert.deepEqual(t.slice(1), [
      ['search', 'mock-gpt', '3', '24', '12', '0.25'],
      ['search', 'other', '1', '8', '4', '0.125'],
    ]);
    assert.deepEqual(fields(totals), { total_cost_usd: '0.375' });

    const j = await ctl(['--json', ...args], env);
    assertExit(j, 0, 'usage --json');
    assert.deepEqual(JSON.parse(j.stdout).total_cost_usd, 0.375);
  });

  test('a base path in --url prefixes every request', { timeout: 15000 }, async () => {
    const r = await ctl(['--url', `${srv.url}/prefix/`, 'team', 'list'], env);
    assertExit(r, 0, 'team list under /prefix');
    assert.equal(srv.last().path, '/prefix/admin/v1/teams');
  });

  test('exit 4 with the server\'s message for a missing team, and for a path it does not know', { timeout: 15000 }, async () => {
    const missing = await ctl(['team', 'show', 'nosuch'], env);
    assertExit(missing, 4, 'team show nosuch');
    assert.equal(missing.stderr, "tollgatectl: No team 'nosuch'. (not_found)\n");
    const unknown = await ctl(['key', 'show', 'x'], env);
    assertExit(unknown, 4, 'key show on a server without keys');
    assert.equal(unknown.stderr, `tollgatectl: the gateway at ${srv.url} does not support 'key show' yet\n`);
  });

  test('exit 1: a 5xx answer, and an answer that is not JSON', { timeout: 15000 }, async () => {
    const boom = await ctl(['team', 'show', 'boom'], env);
    assertExit(boom, 1, '500');
    assert.equal(boom.stderr, 'tollgatectl: The policy store is unavailable. (policy_store_unavailable)\n');
    const garbage = await ctl(['team', 'show', 'garbage'], env);
    assertExit(garbage, 1, 'HTML answer');
    assert.match(garbage.stderr, /not JSON/);
    const empty = await ctl(['team', 'show', 'empty'], env);
    assertExit(empty, 0, 'empty object');
    assert.equal(empty.stdout, '');
  });

  test('exit 7: a change sent whose answer never came may have been made; the message says how to check', { timeout: 15000 }, async () => {
    const rotated = await ctl(['key', 'rotate', 'cut'], env);
    assertExit(rotated, 7, 'rotate cut');
    assert.equal(`${srv.last().method} ${srv.last().path}`, 'POST /admin/v1/keys/cut/rotate');
    assert.match(rotated.stderr, /the change may have been made/);
    assert.match(rotated.stderr, /rotate the key again \(tollgatectl key rotate cut\)/);
    const created = await ctl(['key', 'create', '--team', 'cut'], env);
    assertExit(created, 7, 'create cut');
    assert.match(created.stderr, /key list --team cut\) and revoke one you do not know/);
    const deleted = await ctl(['team', 'delete', 'cut'], env);
    assertExit(deleted, 7, 'delete cut');
    assert.match(deleted.stderr, /Deleting again is safe/);
    // A read cut the same way changes nothing: a bad answer, exit 1, no such advice.
    const shown = await ctl(['team', 'show', 'cut'], env);
    assertExit(shown, 1, 'show cut');
    assert.doesNotMatch(shown.stderr, /may have been made/);
  });

  test('exit 5: a server that accepts but never answers, after the 5 s read timeout', { timeout: 20000 }, async () => {
    const r = await ctl(['team', 'show', 'slow'], env);
    assertExit(r, 5, 'no answer');
    assert.match(r.stderr, /no answer within 5 s/);
    assert.ok(r.ms >= 4500 && r.ms < 12000, `gave up after ${r.ms} ms`);
  });

  test('exit 5 within the 5 s bound when name resolution hangs (getaddrinfo cannot be cancelled)', { timeout: 40000 }, async () => {
    // A stub that makes getaddrinfo sleep 20 s, preloaded: the CLI waited the whole 20 s.
    const dir = mkdtempSync(join(tmpdir(), 'tollgatectl-dns-'));
    try {
      writeFileSync(join(dir, 'slowdns.c'), '#define _GNU_SOURCE\n#include <dlfcn.h>\n#include <netdb.h>\n#include <unistd.h>\n' +
        'int getaddrinfo(const char *n, const char *s, const struct addrinfo *h, struct addrinfo **r) {\n' +
        '  int (*real)(const char*, const char*, const struct addrinfo*, struct addrinfo**) = dlsym(RTLD_NEXT, "getaddrinfo");\n' +
        '  sleep(20);\n  return real(n, s, h, r);\n}\n');
      execFileSync('cc', ['-shared', '-fPIC', '-o', join(dir, 'slowdns.so'), join(dir, 'slowdns.c'), '-ldl']);
      const r = await ctl(['--url', 'http://localhost:9', 'team', 'list'], { ...env, LD_PRELOAD: join(dir, 'slowdns.so'), ASAN_OPTIONS: 'verify_asan_link_order=0' }, { timeoutMs: 30000 });
      assertExit(r, 5, 'hung resolver');
      assert.match(r.stderr, /resolving 'localhost' timed out/);
      assert.ok(r.ms < 12000, `gave up after ${r.ms} ms`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an option\'s value that looks like -h is the value, not a request for help', { timeout: 15000 }, async () => {
    const before = srv.requests.length;
    const named = await ctl(['key', 'create', '--team', 'search', '--name', '-h'], env);
    assert.doesNotMatch(named.stdout, /Usage|--team T/, 'no help printed');
    assert.equal(srv.requests.length, before + 1, 'the key create went to the gateway');
    assert.deepEqual([srv.last().method, srv.last().path, srv.last().body?.name], ['POST', '/admin/v1/keys', '-h']);
    // -h where no value is due, and --help even after a value option, still ask for help.
    for (const args of [['key', 'create', '--team', 'search', '-h'], ['key', 'create', '--name', '--help']]) {
      const h = await ctl(args, env);
      assertExit(h, 0, args.join(' '));
      assert.match(h.stdout, /key create/);
    }
    assert.equal(srv.requests.length, before + 1, 'help sends nothing');
  });

  test('a whole key given to --key goes out as its id only; repeated and empty options are usage errors', { timeout: 15000 }, async () => {
    const secret = 'S'.repeat(43);
    const whole = `tg_AbCdEf123456_${secret}`;
    for (const args of [['quota', 'show', '--team', 'search', '--key', whole], ['usage', '--key', whole],
      ['quota', 'set', '--team', 'search', '--key', whole, '--rpm', '5']]) {
      const r = await ctl(args, env);
      const sent = srv.last();
      assert.ok(!JSON.stringify(sent).includes(secret), `${args.join(' ')} sent the secret: ${JSON.stringify(sent)}`);
      assert.ok(JSON.stringify(sent).includes('AbCdEf123456'), JSON.stringify(sent));
      assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret), r.stderr);
    }
    const twice = await ctl(['key', 'list', '--team', 'search', '--team', 'nosuch'], env);
    assertExit(twice, 2, 'a repeated option');
    assert.match(twice.stderr, /--team is given more than once/);
    const empty = await ctl(['key', 'list', '--team='], env);
    assertExit(empty, 2, 'an empty team');
    assert.match(empty.stderr, /--team needs a team name/);
  });

  test('output that cannot be written is a failure: a new secret lost to a full disk exits 1 and says which key to revoke', { timeout: 15000 }, async () => {
    // /dev/full: every write fails with ENOSPC. The rotation's new secret exists nowhere else.
    const run = (args) => new Promise((resolve) => {
      const out = openSync('/dev/full', 'w');
      const child = spawn(CTL_BIN, args, { stdio: ['ignore', out, 'pipe'], env: { PATH: process.env.PATH, ...env } });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
      child.on('close', (code) => {
        closeSync(out);
        resolve({ code, stderr });
      });
    });
    const rotated = await run(['key', 'rotate', 'abc']);
    assert.equal(rotated.code, 1, rotated.stderr);
    assert.match(rotated.stderr, /could not write the new secret.*revoke key abc/);
    assert.doesNotMatch(rotated.stderr, /save the key now/);
    const listed = await run(['team', 'list']);
    assert.equal(listed.code, 1, listed.stderr);
    assert.match(listed.stderr, /could not write the output/);
  });

  test('an admin URL whose port is out of range is refused, not wrapped to another port', { timeout: 15000 }, async () => {
    for (const port of ['99999', '65536', '0']) {
      const r = await ctl(['--url', `http://127.0.0.1:${port}`, 'team', 'list'], env);
      assertExit(r, 2, `port ${port}`);
      assert.match(r.stderr, /invalid port/);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('tollgatectl help and version (no gateway)', () => {
  const commands = [
    ['key', 'create'],
    ['key', 'list'],
    ['key', 'show'],
    ['key', 'revoke'],
    ['key', 'rotate'],
    ['team', 'create'],
    ['team', 'list'],
    ['team', 'show'],
    ['team', 'delete'],
    ['quota', 'show'],
    ['quota', 'set'],
    ['usage'],
  ];

  test('--help and -h on every command print its usage and exit 0, with no token or gateway', { timeout: 30000 }, async () => {
    for (const cmd of commands) {
      for (const flag of ['--help', '-h']) {
        const r = await ctl([...cmd, flag]);
        assertExit(r, 0, `${cmd.join(' ')} ${flag}`);
        assert.ok(r.stdout.startsWith(`usage: tollgatectl ${cmd.join(' ')}`), `${cmd.join(' ')} ${flag}:\n${r.stdout}`);
        assert.equal(r.stderr, '');
      }
    }
    // --help wins over missing or invalid options.
    const r = await ctl(['key', 'create', '--rpm', 'lots', '--help']);
    assertExit(r, 0, 'key create --rpm lots --help');
    assert.match(r.stdout, /--budget-usd X/);
    for (const noun of ['key', 'team', 'quota']) {
      const n = await ctl([noun, '--help']);
      assertExit(n, 0, `${noun} --help`);
      assert.ok(n.stdout.startsWith(`usage: tollgatectl ${noun} <`), n.stdout);
      for (const [, verb] of commands.filter((c) => c[0] === noun)) assert.match(n.stdout, new RegExp(`tollgatectl ${noun} ${verb}`));
    }
  });

  test('top-level --help lists the commands, the audit verbs, the environment and the exit codes', { timeout: 15000 }, async () => {
    for (const args of [['--help'], ['-h'], ['help'], ['--url', 'http://x', '--help']]) {
      const r = await ctl(args);
      assertExit(r, 0, args.join(' '));
      assert.match(r.stdout, /^usage: tollgatectl/);
      for (const [noun, verb] of commands) assert.ok(r.stdout.includes(`${noun}${verb ? ` ${verb}` : ''}`), `${noun} ${verb ?? ''}`);
      assert.match(r.stdout, /audit export\|verify/);
      assert.match(r.stdout, /TOLLGATE_ADMIN_URL/);
      assert.match(r.stdout, /TOLLGATE_ADMIN_TOKEN/);
      for (const code of [0, 1, 2, 3, 4, 5]) assert.match(r.stdout, new RegExp(`^  ${code}  `, 'm'), `exit code ${code} documented`);
    }
    const v = await ctl(['--version']);
    assertExit(v, 0, '--version');
    assert.match(v.stdout, /^tollgatectl \d+\.\d+\.\d+\n$/);
  });

  test('audit goes to the local audit verbs, not to the admin API', { timeout: 15000 }, async () => {
    // No token and no gateway: an admin-API command would exit 3; the audit verbs need neither.
    const r = await ctl(['audit', 'verify', join(tmpdir(), 'no-such-audit-dir')]);
    assert.notEqual(r.code, 3, r.stderr);
    assert.doesNotMatch(r.stderr, /unknown command|TOLLGATE_ADMIN_TOKEN/);
  });

  test('audit verbs take the global --json, --opt=value like every command, and have help', { timeout: 15000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgatectl-audit-'));
    try {
      // An empty directory verifies (no instance yet), with a note that there was nothing to
      // verify (a wrong --dir must not read as an intact trail): as JSON with --json before or after.
      for (const args of [['--json', 'audit', 'verify', '--dir', dir], ['audit', 'verify', `--dir=${dir}`, '--json']]) {
        const r = await ctl(args);
        assertExit(r, 0, args.join(' '));
        assert.equal(JSON.parse(r.stdout).ok, true, r.stdout);
        assert.match(JSON.parse(r.stdout).notes.join(' '), /no audit trail in .*no segment of any instance/, r.stdout);
      }
      const plain = await ctl(['audit', 'verify', '--dir', dir]);
      assert.match(plain.stdout, /note: no audit trail in/, plain.stdout);
      const missing = await ctl(['--json', 'audit', 'verify', `--dir=${join(dir, 'nope')}`]);
      assertExit(missing, 4, 'a missing directory');
      assert.equal(JSON.parse(missing.stdout).ok, false, missing.stdout);
      const exported = await ctl(['audit', 'export', `--dir=${dir}`, '--from=2026-01-01']);
      assertExit(exported, 0, 'export with --opt=value');
      const help = await ctl(['help', 'audit']);
      assertExit(help, 0, 'help audit');
      assert.match(help.stdout, /usage: tollgatectl audit <verb>[^]*verify/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
