// Helpers that run the real tollgate binary and talk to it at the byte level.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { GATEWAY_BIN } from './paths.mjs';

export { GATEWAY_BIN };

// Gateways still running when this process ends (a failed test, a runner timeout) are killed.
const live = new Set();
function killAll() {
  for (const g of live) {
    try {
      process.kill(g.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
  });
}

/** Throws a helpful error when the binary has not been built. */
export function requireBinary() {
  if (!existsSync(GATEWAY_BIN)) {
    throw new Error(`gateway binary not found at ${GATEWAY_BIN}; build it (cmake --build --preset dev) or set TOLLGATE_BIN`);
  }
}

/**
 * Server block used by most tests: both listeners on free loopback ports. Unless told otherwise it
 * also opens the gateway to callers without keys (`auth.required: false`) and prices every model at
 * $0 (a model without a price is a config error), so tests about other things need no keys.
 */
export function serverYaml({ workers = 2, limits = {}, timeouts = {}, accessLog, openAuth = true, freePrices = true } = {}) {
  // auth and prices first: tests append more `server:` keys after this block.
  const lines = [];
  if (openAuth) lines.push('auth:', '  required: false');
  if (freePrices) lines.push('prices:', '  "*": {input: 0, output: 0}');
  lines.push('server:', '  listen: 127.0.0.1:0', '  admin_listen: 127.0.0.1:0', `  workers: ${workers}`);
  const block = (name, obj) => {
    const keys = Object.keys(obj);
    if (!keys.length) return;
    lines.push(`  ${name}:`);
    for (const k of keys) lines.push(`    ${k}: ${obj[k]}`);
  };
  block('limits', limits);
  block('timeouts', timeouts);
  if (accessLog !== undefined) lines.push(`  access_log: ${accessLog}`);
  return lines.join('\n') + '\n';
}

/** Runs `tollgate` with arbitrary arguments to completion (for `--check`). */
export async function runTollgate(args, { timeoutMs = 10000, env } = {}) {
  requireBinary();
  const child = spawn(GATEWAY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

/**
 * `tollgate --check` on `yaml`: resolves with its stderr after asserting that the config was
 * refused (exit 2) with a message matching every pattern in `patterns`.
 */
export async function checkRefused(yaml, ...patterns) {
  const cfg = tempConfig(yaml);
  try {
    const r = await runTollgate(['--config', cfg.path, '--check']);
    if (r.code !== 2) throw new Error(`expected the config to be refused (exit 2), got ${r.code}: ${r.stderr}`);
    for (const p of patterns) if (!p.test(r.stderr)) throw new Error(`stderr does not match ${p}: ${r.stderr}`);
    return r.stderr;
  } finally {
    cfg.cleanup();
  }
}

/** A temporary directory with a config file in it. */
/** Every record of the audit trail in `dir` so far, in chain order (segments by name). */
export function auditRecords(dir) {
  return readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)));
}

export function tempConfig(yaml, name = 'tollgate.yaml') {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-test-'));
  const path = join(dir, name);
  writeFileSync(path, yaml);
  return { dir, path, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts the gateway with `yaml` written to a fresh temp dir, waits (bounded) for the ready
 * file, and returns a handle. On failure the error carries the gateway's stderr. `args` are
 * extra gateway arguments (`--audit-dir`); `wrap` an argv prefix that execs the gateway.
 */
export async function startGateway(yaml, { env = {}, readyTimeoutMs = 15000, args = [], wrap = [] } = {}) {
  requireBinary();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-gw-'));
  const configPath = join(dir, 'tollgate.yaml');
  const readyPath = join(dir, 'ready.json');
  writeFileSync(configPath, yaml);

  // `wrap` runs the gateway under another program that execs it (same pid), e.g. prlimit.
  const argv = [...wrap, GATEWAY_BIN, '--config', configPath, '--ready-file', readyPath, ...args];
  const child = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const emitter = new EventEmitter();
  emitter.setMaxListeners(100);
  let stdout = '';
  let stderr = '';
  let exit;
  child.stdout.setEncoding('utf8').on('data', (d) => {
    stdout += d;
    emitter.emit('stdout');
  });
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderr += d;
    emitter.emit('stderr');
  });
  // 'close' fires after the process exited AND its stdio pipes drained, so readers of
  // stdout/stderr after `exited` see everything.
  const exited = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      exit = { code, signal };
      live.delete(child);
      emitter.emit('exit');
      resolve(exit);
    });
  });
  live.add(child);

  const waitText = (which, pred, timeoutMs, what) =>
    new Promise((resolve, reject) => {
      const text = () => (which === 'stdout' ? stdout : stderr);
      const check = () => {
        const r = pred(text());
        if (r) {
          done();
          resolve(r);
          return true;
        }
        return false;
      };
      const onExit = () => {
        if (!check()) {
          done();
          reject(new Error(`gateway exited (${JSON.stringify(exit)}) before ${what}\nstderr:\n${stderr}`));
        }
      };
      const t = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${which}:\n${text().slice(-4000)}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(t);
        emitter.off(which, check);
        emitter.off('exit', onExit);
      };
      if (check()) return;
      emitter.on(which, check);
      emitter.on('exit', onExit);
    });

  // Wait for the ready file: poll (a rename is atomic, so a present file is complete), bounded,
  // and give up early if the process dies.
  const deadline = Date.now() + readyTimeoutMs;
  let ready;
  while (!ready) {
    if (exit) {
      await exited;
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`gateway exited before ready (${JSON.stringify(exit)})\nstderr:\n${stderr}\nstdout:\n${stdout}`);
    }
    if (existsSync(readyPath)) {
      ready = JSON.parse(readFileSync(readyPath, 'utf8'));
      break;
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`gateway not ready within ${readyTimeoutMs} ms\nstderr:\n${stderr}\nstdout:\n${stdout}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }

  const port = ready.listen.port;
  const adminPort = ready.admin.port;
  const gw = {
    child,
    pid: child.pid,
    dir,
    configPath,
    readyPath,
    ready,
    port,
    adminPort,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    baseURL: `http://127.0.0.1:${port}/v1`,
    exited,
    get exit() {
      return exit;
    },
    get alive() {
      return exit === undefined;
    },
    stdout: () => stdout,
    stderr: () => stderr,
    /** Parsed JSON lines of stdout that carry a request_id (the access log). */
    accessLog: () =>
      stdout
        .split('\n')
        .filter((l) => l.trim().startsWith('{'))
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return undefined;
          }
        })
        .filter((o) => o && typeof o === 'object' && 'request_id' in o),
    /** Waits (bounded) until an access-log line satisfies `pred`; resolves with it. */
    waitForLog(pred, timeoutMs = 5000) {
      return waitText(
        'stdout',
        () => gw.accessLog().find(pred),
        timeoutMs,
        'an access-log line',
      );
    },
    /** Waits (bounded) until stdout matches `re`; resolves with the match. */
    waitForStdout(re, timeoutMs = 5000) {
      return waitText('stdout', (t) => re.exec(t), timeoutMs, `stdout ${re}`);
    },
    /** Waits (bounded) until stderr matches `re` (searching only text after `fromIndex`). */
    waitForStderr(re, timeoutMs = 5000, fromIndex = 0) {
      return waitText('stderr', (t) => re.exec(t.slice(fromIndex)), timeoutMs, `stderr ${re}`);
    },
    /** Replaces the config file atomically (as an operator's deploy tool would). */
    writeConfig(text) {
      const tmp = configPath + '.new';
      writeFileSync(tmp, text);
      renameSync(tmp, configPath);
    },
    signal(sig) {
      process.kill(child.pid, sig);
    },
    /** SIGTERM, then wait up to `timeoutMs` for the exit; returns `{code, signal}`. */
    async stop({ timeoutMs = 10000 } = {}) {
      if (exit) return exit;
      child.kill('SIGTERM');
      let t;
      const r = await Promise.race([
        exited,
        new Promise((resolve) => {
          t = setTimeout(() => resolve(undefined), timeoutMs);
        }),
      ]);
      clearTimeout(t);
      if (!r) {
        child.kill('SIGKILL');
        await exited;
        throw new Error(`gateway did not exit within ${timeoutMs} ms of SIGTERM\nstderr:\n${stderr.slice(-4000)}`);
      }
      return r;
    },
    /** Stops with SIGTERM and asserts a clean exit (code 0). */
    async stopClean(opts) {
      const r = await gw.stop(opts);
      assert.deepEqual(r, { code: 0, signal: null }, `gateway exit after SIGTERM; stderr:\n${stderr.slice(-4000)}`);
      return r;
    },
    /** Last-resort cleanup: SIGKILL if still running, remove the temp dir. */
    async kill() {
      if (!exit) {
        child.kill('SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
    /** Files currently in the gateway's temp dir (to check the ready file was renamed into place). */
    files: () => readdirSync(dir),
  };
  return gw;
}

// ---------------------------------------------------------------------------------------------
// Byte-level HTTP

/**
 * Parses one HTTP/1.1 response from `buf` (a Buffer). Returns
 * `{ status, reason, headers (lowercased, arrays for repeats), rawHeaders, body (Buffer),
 *    text, json, complete, headEnd }`, or undefined when not even the head is there.
 */
export function parseResponse(buf) {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return undefined;
  const head = buf.subarray(0, headEnd).toString('latin1').split('\r\n');
  const m = /^HTTP\/(\d\.\d) (\d{3}) ?(.*)$/.exec(head[0]);
  if (!m) return { status: NaN, statusLine: head[0], headers: {}, complete: false };
  const headers = {};
  const rawHeaders = [];
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    rawHeaders.push([name, value]);
    if (name in headers) headers[name] = [].concat(headers[name], value);
    else headers[name] = value;
  }
  let rest = buf.subarray(headEnd + 4);
  let body = Buffer.alloc(0);
  let complete = false;
  let consumed = headEnd + 4;
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts = [];
    let off = 0;
    for (;;) {
      const le = rest.indexOf('\r\n', off);
      if (le < 0) break;
      const size = parseInt(rest.subarray(off, le).toString('latin1'), 16);
      if (Number.isNaN(size)) break;
      if (size === 0) {
        const end = rest.indexOf('\r\n\r\n', off);
        // Last chunk then trailers/empty line.
        if (rest.subarray(le, le + 4).toString() === '\r\n\r\n' || end >= 0) {
          complete = true;
          consumed += (end >= 0 ? end : le) + 4;
        }
        break;
      }
      if (rest.length < le + 2 + size + 2) break;
      parts.push(rest.subarray(le + 2, le + 2 + size));
      off = le + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers['content-length'] !== undefined) {
    const len = Number([].concat(headers['content-length'])[0]);
    body = rest.subarray(0, len);
    complete = rest.length >= len;
    consumed += Math.min(len, rest.length);
  } else {
    body = rest;
  }
  const text = body.toString('utf8');
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { httpVersion: m[1], status: Number(m[2]), reason: m[3], headers, rawHeaders, body, text, json, complete, consumed };
}

/**
 * Opens a TCP connection, writes `parts` (strings/Buffers, or `{data, delayMs}` to wait before
 * a part), and collects everything the server sends until it closes the connection or
 * `timeoutMs` passes. Write errors after the server closed are tolerated (the answer is what
 * matters). Returns `{ data, text, response, closed, closedAt, reset, startedAt, firstByteAt }`.
 */
export function rawExchange(port, parts, { timeoutMs = 5000, host = '127.0.0.1', stopWhenComplete = false } = {}) {
  const list = (Array.isArray(parts) ? parts : [parts]).map((p) =>
    typeof p === 'string' || Buffer.isBuffer(p) ? { data: p, delayMs: 0 } : p,
  );
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    const chunks = [];
    const res = { closed: false, reset: false, writeError: undefined, startedAt: Date.now(), firstByteAt: undefined, closedAt: undefined };
    let settled = false;
    let timer;
    let pending;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(pending);
      res.data = Buffer.concat(chunks);
      res.text = res.data.toString('latin1');
      res.response = parseResponse(res.data);
      sock.destroy();
      resolve(res);
    };
    sock.on('data', (d) => {
      res.firstByteAt ??= Date.now();
      chunks.push(d);
      const done = stopWhenComplete ? parseResponse(Buffer.concat(chunks)) : undefined;
      if (done?.complete) {
        // An answer that says it closes the connection: its close is waited for (briefly), as it
        // may come a moment after the last byte (a slow ASan build); otherwise done at once.
        if (/\bclose\b/i.test(String(done.headers?.connection ?? ''))) {
          clearTimeout(timer);
          timer = setTimeout(finish, 1000);
        } else finish();
      }
    });
    sock.on('end', () => {
      res.closed = true;
      res.closedAt = Date.now();
      finish();
    });
    sock.on('close', () => {
      if (!res.closed) {
        res.closed = true;
        res.closedAt = Date.now();
      }
      finish();
    });
    sock.on('error', (e) => {
      if (e.code === 'ECONNRESET') res.reset = true;
      else res.writeError = e;
    });
    timer = setTimeout(finish, timeoutMs);
    let i = 0;
    const writeNext = () => {
      if (settled || sock.destroyed || i >= list.length) return;
      const { data, delayMs = 0 } = list[i];
      pending = setTimeout(() => {
        if (settled || sock.destroyed || !sock.writable) return;
        i++;
        sock.write(data, (err) => {
          if (err) res.writeError = err;
          else writeNext();
        });
      }, delayMs);
    };
    sock.on('connect', writeNext);
  });
}

/**
 * A plain node:http request (lets tests send headers that fetch() refuses, like `te` or
 * `proxy-authorization`). Returns `{ status, headers, rawHeaders, text, json }`.
 */
export function httpRequest(url, { method = 'GET', headers = {}, body, agent = false, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`httpRequest ${method} ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** fetch() with a bound; resolves with the Response. */
export async function fetchT(url, init = {}, timeoutMs = 10000) {
  return fetch(url, { ...init, signal: init.signal ?? AbortSignal.timeout(timeoutMs) });
}

/** Reads a fetch Response whole: `{ status, headers, json, text }` (json undefined if not JSON). */
export async function readResponse(r) {
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, json, text };
}

/** POSTs JSON to the gateway; returns `{ status, headers, json, text }`. */
export async function postJson(url, body, { headers = {}, timeoutMs = 10000 } = {}) {
  const r = await fetchT(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  }, timeoutMs);
  return readResponse(r);
}

/** Asserts an OpenAI-shaped error body: all four keys, and the given status/code/param. */
export function assertOpenAIError(res, { status, code, param, type }) {
  const where = `response ${res.status} ${typeof res.text === 'string' ? res.text.slice(0, 400) : ''}`;
  if (status !== undefined) assert.equal(res.status, status, where);
  const body = res.json;
  assert.ok(body && typeof body.error === 'object' && body.error !== null, `OpenAI error body expected: ${where}`);
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in body.error, `error.${k} missing: ${where}`);
  assert.equal(typeof body.error.message, 'string', where);
  assert.ok(body.error.message.length > 0, where);
  assert.equal(typeof body.error.type, 'string', where);
  assert.ok(body.error.param === null || typeof body.error.param === 'string', `param must be string|null: ${where}`);
  assert.ok(body.error.code === null || typeof body.error.code === 'string', `code must be string|null: ${where}`);
  if (code !== undefined) assert.equal(body.error.code, code, where);
  if (param !== undefined) assert.equal(body.error.param, param, where);
  if (type !== undefined) assert.equal(body.error.type, type, where);
  return body.error;
}

/** x-request-id format: 16 lowercase hex digits. */
export const REQUEST_ID_RE = /^[0-9a-f]{16}$/;

/** Resolves `ms` later; for pacing a deliberately slow client only (never to wait for an event). */
export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` (async ok) until it returns a truthy value, at most `timeoutMs`. */
export async function eventually(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms${last ? `: ${last.message}` : ''}`);
    await delay(intervalMs);
  }
}
