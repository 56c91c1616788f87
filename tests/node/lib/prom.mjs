// Prometheus text-format helpers: a small sample parser and `promtool check metrics`.
import { spawn } from 'node:child_process';
import { once } from 'node:events';

export const PROMTOOL = process.env.PROMTOOL ?? '/usr/bin/promtool';

/** Parses exposition text into `{ types: {family: type}, samples: [{name, labels, value}] }`. */
export function parseMetrics(text) {
  const types = {};
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    if (line.startsWith('#')) {
      const m = /^# TYPE (\S+) (\S+)/.exec(line);
      if (m) types[m[1]] = m[2];
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    const v = m[4];
    const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
    samples.push({ name: m[1], labels, value });
  }
  return { types, samples };
}

/** The family a sample belongs to (strips histogram/summary/counter suffixes when the family is declared). */
export function familyOf(types, name) {
  if (types[name]) return name;
  for (const suf of ['_total', '_bucket', '_sum', '_count', '_created']) {
    if (name.endsWith(suf) && types[name.slice(0, -suf.length)]) return name.slice(0, -suf.length);
  }
  return name;
}

/** Counter samples carrying label `model="<model>"`, keyed `name{labels}`. */
export function counterSamplesForModel(parsed, model) {
  const out = new Map();
  for (const s of parsed.samples) {
    if (s.labels.model !== model) continue;
    if (parsed.types[familyOf(parsed.types, s.name)] !== 'counter') continue;
    const key = `${s.name}{${Object.entries(s.labels).map(([k, v]) => `${k}="${v}"`).sort().join(',')}}`;
    out.set(key, s.value);
  }
  return out;
}

/** Runs `promtool check metrics` with `text` on stdin; returns `{code, stdout, stderr}`. */
export async function promtoolCheck(text, { timeoutMs = 10000 } = {}) {
  const child = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  child.stdin.on('error', () => {});
  child.stdin.end(text);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = await once(child, 'exit');
  clearTimeout(timer);
  return { code, stdout, stderr };
}
