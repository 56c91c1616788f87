// Replays the EVALSHA calls of a `redis-cli monitor` capture against a fresh redis-server per
// run, with each script given (same arguments), rounds interleaved; prints per script the minimum
// microseconds per call (INFO commandstats) and how many replies were errors. With INSTRUCTIONS=1
// each redis-server runs under valgrind's callgrind, collecting only inside EVALSHA, and the
// figure is Redis's instructions per script call instead: deterministic, so one round tells
// (the time is then meaningless). Used by bench/script-cost.
// Usage: node script_replay.mjs capture.txt rounds script.lua...
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [capture, roundsArg, ...scripts] = process.argv.slice(2);
const rounds = Number(roundsArg);
const instructions = process.env.INSTRUCTIONS === '1';

/** MONITOR writes each argument quoted, with C-style escapes (\xHH, \n, \", \\). */
function unescape(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '\\') { out.push(...Buffer.from(s[i], 'utf8')); continue; }
    const n = s[++i];
    if (n === 'x') { out.push(parseInt(s.slice(i + 1, i + 3), 16)); i += 2; continue; }
    out.push({ n: 10, r: 13, t: 9, a: 7, b: 8, '"': 34, '\\': 92 }[n] ?? n.charCodeAt(0));
  }
  return Buffer.from(out);
}
const calls = [];
for (const line of readFileSync(capture, 'latin1').split('\n')) {
  if (!line.includes('] "EVALSHA"') || line.includes('[0 lua]')) continue;
  calls.push([...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => unescape(m[1])));
}
if (!calls.length) throw new Error(`no EVALSHA calls in ${capture}`);
let admissions = 0, settlements = 0;
for (const c of calls) {
  const at = 3 + Number(c[2].toString());
  const argv = c.slice(at);
  admissions += Number(argv[2].toString());
  settlements += Number(argv[3].toString());
  // ARGV[6], the batch's deadline on Redis's clock (admit.lua): long past when replayed, so that
  // every admission would be refused as late. Replayed without one (0). Captures made before
  // the deadline existed have the first scope spec there: left alone.
  if (argv.length > 5 && /^\d+$/.test(argv[5].toString())) c[at + 5] = Buffer.from('0');
}

const resp = (args) => Buffer.concat([Buffer.from(`*${args.length}\r\n`),
  ...args.flatMap((a) => [Buffer.from(`$${a.length}\r\n`), a, Buffer.from('\r\n')])]);

/** One reply from `buf` at `at`: [end, isError, text of a bulk or line] or null if incomplete. */
function parseReply(buf, at) {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return null;
  const t = String.fromCharCode(buf[at]), line = buf.toString('latin1', at + 1, eol);
  if (t === '+' || t === '-' || t === ':') return [eol + 2, t === '-', line];
  if (t === '$') {
    const n = Number(line);
    if (n < 0) return [eol + 2, false, null];
    if (buf.length < eol + 2 + n + 2) return null;
    return [eol + 4 + n, false, buf.toString('latin1', eol + 2, eol + 2 + n)];
  }
  let p = eol + 2;
  for (let i = 0; i < Number(line); i++) {
    const r = parseReply(buf, p);
    if (!r) return null;
    p = r[0];
  }
  return [p, false, null];
}

function client(port) {
  const sock = net.createConnection({ port, host: '127.0.0.1' });
  let buf = Buffer.alloc(0), waiting = null;
  const pump = () => {
    if (!waiting) return;
    const r = parseReply(buf, 0);
    if (!r) return;
    buf = buf.subarray(r[0]);
    const w = waiting;
    waiting = null;
    w(r);
  };
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); pump(); });
  const ready = new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
  return {
    ready,
    call(args) {
      return new Promise((res) => { waiting = res; sock.write(resp(args.map((a) => (Buffer.isBuffer(a) ? a : Buffer.from(a))))); pump(); });
    },
    close() { sock.destroy(); },
  };
}

async function freePort() {
  return new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}

async function run(script) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-replay-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const srv = instructions
    ? spawn('valgrind', ['--tool=callgrind', '--toggle-collect=evalShaCommand', `--callgrind-out-file=${dir}/cg.out`,
      'redis-server', ...args], { stdio: 'ignore' })
    : spawn('redis-server', args, { stdio: 'ignore' });
  const exited = new Promise((res) => srv.once('exit', res));
  try {
    let c;
    for (let i = 0; i < (instructions ? 400 : 100); i++) {
      try { c = client(port); await c.ready; break; } catch { c = null; await new Promise((r) => setTimeout(r, 50)); }
    }
    if (!c) throw new Error('redis-server did not start');
    const sha = (await c.call(['SCRIPT', 'LOAD', readFileSync(script)]))[2];
    let errors = 0, last = '';
    for (const args of calls) {
      const r = await c.call([args[0], Buffer.from(sha), ...args.slice(2)]);
      if (r[1]) { errors++; last = r[2]; }
    }
    const info = (await c.call(['INFO', 'commandstats']))[2];
    const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(info);
    if (instructions) {
      // SHUTDOWN ends the server cleanly, so callgrind writes its totals.
      c.call(['SHUTDOWN', 'NOSAVE']);
      await exited;
      const out = readFileSync(join(dir, readdirSync(dir).find((f) => f.startsWith('cg.out'))), 'latin1');
      const total = /^summary:\s+(\d+)/m.exec(out) ?? /^totals:\s+(\d+)/m.exec(out);
      c.close();
      return { us: Number(total[1]) / Number(m[1]), errors, last };
    }
    c.close();
    return { us: Number(m[2]) / Number(m[1]), errors, last };
  } finally {
    srv.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

const best = new Map();
for (let r = 0; r < rounds; r++) {
  for (const s of scripts) {
    const x = await run(s);
    const b = best.get(s);
    if (!b || x.us < b.us) best.set(s, x);
    if (x.errors) best.get(s).errors = x.errors, best.get(s).last = x.last;
  }
}
console.log(`bench: ${calls.length} script calls replayed, ${(admissions / calls.length).toFixed(1)} admissions and ` +
  `${(settlements / calls.length).toFixed(1)} settlements each; minimum of ${rounds} rounds`);
for (const s of scripts) {
  const b = best.get(s);
  const figure = instructions ? `${Math.round(b.us / 1000)}k instructions of Redis` : `${b.us.toFixed(1)} µs`;
  console.log(`  ${s.replace(process.cwd() + '/', '')}: ${figure} per script call` +
    (b.errors ? `  (${b.errors} error replies, e.g. ${b.last}: not comparable)` : ''));
}
