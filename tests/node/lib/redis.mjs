// A real redis-server for the policy tests: started on a free loopback port in a temp dir, with
// persistence off, so every start is an empty store. `stop()` kills it (SIGKILL, as a crash or a
// network partition looks to the gateway), `restart()` brings a fresh one back on the same port.
// Commands go over a raw TCP socket in RESP; no client library is needed.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { httpRequest } from './gateway.mjs';

export const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';

// Servers still running when this process ends (a failed test, a runner timeout) are killed.
const live = new Set();
process.on('exit', () => {
  for (const c of live) {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Encodes a command as a RESP array of bulk strings. */
export function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const s = String(a);
    parts.push(`$${Buffer.byteLength(s)}\r\n${s}\r\n`);
  }
  return parts.join('');
}

/**
 * Parses one RESP reply at `off` of `buf`. Returns `{value, end}` or undefined when incomplete.
 * Errors come back as `{error: message}`; nil as null.
 */
export function parseReply(buf, off = 0) {
  const le = buf.indexOf('\r\n', off);
  if (le < 0) return undefined;
  const type = String.fromCharCode(buf[off]);
  const line = buf.subarray(off + 1, le).toString('utf8');
  const next = le + 2;
  switch (type) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: { error: line }, end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      if (buf.length < next + n + 2) return undefined;
      return { value: buf.subarray(next, next + n).toString('utf8'), end: next + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      const out = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, at);
        if (!r) return undefined;
        out.push(r.value);
        at = r.end;
      }
      return { value: out, end: at };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

/**
 * Sends one command to 127.0.0.1:`port` on a fresh connection and resolves with its reply
 * (RESP errors resolve as `{error}`). Rejects on connection errors or after `timeoutMs`.
 */
export function redisCommand(port, args, { timeoutMs = 2000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = Buffer.alloc(0);
    const done = (err, v) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(v);
    };
    const timer = setTimeout(() => done(new Error(`redis ${args[0]}: no reply within ${timeoutMs} ms`)), timeoutMs);
    sock.on('connect', () => sock.write(encodeCommand(args)));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      let r;
      try {
        r = parseReply(buf);
      } catch (e) {
        return done(e);
      }
      if (r) done(undefined, r.value);
    });
    sock.on('error', (e) => done(e));
    sock.on('close', () => done(new Error(`redis ${args[0]}: connection closed without a reply`)));
  });
}

/** PING over a raw socket (`*1\r\n$4\r\nPING\r\n`); true when the answer is +PONG. */
export async function ping(port, timeoutMs = 500) {
  try {
    return (await redisCommand(port, ['PING'], { timeoutMs })) === 'PONG';
  } catch {
    return false;
  }
}

/**
 * Starts redis-server on a free port in a fresh temp dir and waits (bounded) until it answers
 * PING. Returns a handle: `{port, address, dir, command(...args), ping(), stop(), restart(),
 * close(), output()}`.
 */
export async function startRedis({ readyTimeoutMs = 5000, extraArgs = [] } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-redis-'));
  let child;
  let output = '';
  let exited;

  async function launch() {
    child = spawn(
      REDIS_SERVER,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', ...extraArgs],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const me = child;
    live.add(me);
    me.stdout.setEncoding('utf8').on('data', (d) => (output += d));
    me.stderr.setEncoding('utf8').on('data', (d) => (output += d));
    exited = new Promise((resolve) => {
      me.on('error', (e) => {
        output += `\nspawn error: ${e.message}`;
        live.delete(me);
        resolve({ code: null, signal: null, error: e });
      });
      me.on('exit', (code, signal) => {
        live.delete(me);
        resolve({ code, signal });
      });
    });
    let gone;
    exited.then((e) => (gone = e));
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (gone) throw new Error(`redis-server exited before answering PING (${JSON.stringify(gone)}):\n${output}`);
      if (await ping(port, 200)) return;
      if (Date.now() > deadline) {
        me.kill('SIGKILL');
        await exited;
        throw new Error(`redis-server on port ${port} did not answer PING within ${readyTimeoutMs} ms:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const handle = {
    port,
    address: `127.0.0.1:${port}`,
    dir,
    get pid() {
      return child?.pid;
    },
    get alive() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    /** Runs one command; resolves with the reply (`{error}` for a RESP error). */
    command: (...args) => redisCommand(port, args),
    ping: () => ping(port),
    /** SIGKILL: the gateway sees its connections drop, as in a crash. */
    async stop() {
      if (!handle.alive) return;
      child.kill('SIGKILL');
      await exited;
    },
    /** SIGSTOP: the server hangs with its connections open (commands time out, nothing is refused). */
    pause() {
      if (handle.alive) child.kill('SIGSTOP');
    },
    /** SIGCONT after pause(). */
    resume() {
      if (handle.alive) child.kill('SIGCONT');
    },
    /** A fresh (empty) server on the same port. */
    async restart() {
      await handle.stop();
      await launch();
    },
    /** Stops and removes the temp dir. */
    async close() {
      await handle.stop();
      rmSync(dir, { recursive: true, force: true });
    },
    output: () => output,
  };
  try {
    await launch();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return handle;
}

/**
 * A TCP relay in front of `redis` (the gateway connects to `relay.address`), which can lose one
 * answer: after `loseNextAnswerTo(word)`, the next command containing `word` goes to Redis, which
 * runs it, and its answer is dropped and the connection reset, as a network that fails right after
 * the request arrived. `lost` counts the answers lost so far.
 */
export async function startRedisRelay(redis) {
  const sockets = new Set();
  let armed = null;
  let held = null; // connections waiting for open(), while hold() is on
  const relay = {
    lost: 0,
    loseNextAnswerTo(word) {
      armed = word;
    },
    /** New connections wait (accepted, nothing relayed) until open(): Redis's state stays as the lost answer left it. */
    hold() {
      held ??= [];
    },
    open() {
      const waiting = held ?? [];
      held = null;
      for (const c of waiting) relayConnection(c);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  const server = net.createServer((client) => {
    if (!held) return relayConnection(client);
    held.push(client);
    sockets.add(client);
    client.on('error', () => client.destroy());
  });
  function relayConnection(client) {
    if (client.destroyed) return;
    const upstream = net.connect(redis.port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let doomed = false;  // this connection's next answer is lost
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('data', (d) => {
      if (armed && d.includes(armed)) {
        armed = null;
        doomed = true;
      }
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!doomed) return void client.write(d);
      relay.lost++;
      client.resetAndDestroy();
      end();
    });
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  }
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.port = server.address().port;
  relay.address = `127.0.0.1:${relay.port}`;
  return relay;
}

/**
 * Waits (bounded) until every worker of a gateway with a Redis store has its store connection up.
 * The ready file is written before those connections finish connecting, and requests on a worker
 * whose connection is still down take the degraded path. Admin connections are handed to workers
 * round robin, so `rounds` consecutive answers from the store (404 for an unknown key id, not 503)
 * on fresh connections cover every worker.
 */
export async function waitStoreUp(gw, adminToken, { rounds = 6, timeoutMs = 5000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let streak = 0;
  let last;
  while (streak < rounds) {
    last = await httpRequest(`${gw.adminUrl}/admin/v1/keys/nosuchkey0probe`, {
      headers: { authorization: `Bearer ${adminToken}` },
      timeoutMs: 2000,
    });
    if (last.status === 404) streak++;
    else streak = 0;
    if (streak >= rounds) break;
    if (Date.now() > deadline) {
      throw new Error(`gateway's store connections not up within ${timeoutMs} ms; last answer ${last.status} ${last.text}`);
    }
    if (last.status !== 404) await new Promise((r) => setTimeout(r, 20));
  }
}
