// Small helpers shared by policy.test.mjs and replicas.test.mjs: keys and digests, admin API
// calls, budget reads, metric samples.
import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';

import { eventually, fetchT, postJson, readResponse } from './gateway.mjs';
import { parseMetrics } from './prom.mjs';

const ALNUM = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

export const randomAlnum = (n) => Array.from({ length: n }, () => ALNUM[randomInt(ALNUM.length)]).join('');
export const sha256hex = (s) => createHash('sha256').update(s).digest('hex');

/** A static key for the config file: `{id, secret, full, digest, hex}`. */
export function staticKey(id) {
  const secret = randomAlnum(40);
  const hex = sha256hex(secret);
  return { id, secret, full: `tg_${id}_${secret}`, digest: `sha256:${hex}`, hex };
}

/** An admin token and its config entry. */
export function adminToken(name = 'ops') {
  const token = `adm${randomAlnum(40)}`;
  const hex = sha256hex(token);
  return { name, token, hex, yaml: `    - {name: ${name}, digest: "sha256:${hex}"}\n` };
}

/** Parts of a `tg_<id>_<secret>` key. */
export function splitKey(full) {
  const m = /^tg_([A-Za-z0-9]+)_([A-Za-z0-9]+)$/.exec(full);
  assert.ok(m, `not a tollgate key: ${full}`);
  return { id: m[1], secret: m[2], hex: sha256hex(m[2]) };
}

/** POST /v1/chat/completions with a key (Authorization: Bearer unless `header` says otherwise). */
export function chat(gw, key, body, { header = 'authorization', timeoutMs = 20000, extraHeaders = {} } = {}) {
  const headers = { ...extraHeaders };
  if (key !== undefined) headers[header] = header === 'authorization' ? `Bearer ${key}` : key;
  return postJson(`${gw.baseURL}/chat/completions`, body, { headers, timeoutMs });
}

/** A call to the admin API; returns `{status, headers, json, text}`. */
export async function admin(gw, token, method, path, body) {
  const headers = {};
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetchT(`${gw.adminUrl}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return readResponse(r);
}

/** Creates a key through the admin API; asserts 201 and returns the body (with `key`). */
export async function createKey(gw, token, body) {
  const r = await admin(gw, token, 'POST', '/admin/v1/keys', body);
  assert.equal(r.status, 201, `create key: ${r.status} ${r.text}`);
  return r.json;
}

/** GET /admin/v1/budget; asserts 200. */
export async function budget(gw, token, team, key) {
  const q = `team=${encodeURIComponent(team)}${key ? `&key=${encodeURIComponent(key)}` : ''}`;
  const r = await admin(gw, token, 'GET', `/admin/v1/budget?${q}`);
  assert.equal(r.status, 200, `budget ${q}: ${r.status} ${r.text}`);
  return r.json;
}

/**
 * Polls the budget until nothing is reserved any more (settlement runs just after the response,
 * in the background) and `pred(b)` holds; returns it.
 */
export function settledBudget(gw, token, team, { key, pred = () => true, timeoutMs = 5000 } = {}) {
  let last;
  return eventually(
    async () => {
      last = await budget(gw, token, team, key);
      return last.reserved_nano === 0 && pred(last) ? last : undefined;
    },
    { timeoutMs, intervalMs: 25, what: `settled budget of ${team}${key ? `/${key}` : ''} (last ${JSON.stringify(last)})` },
  ).catch((e) => {
    throw new Error(`${e.message}; last: ${JSON.stringify(last)}`);
  });
}

export async function scrape(gw) {
  const r = await fetchT(`${gw.adminUrl}/metrics`);
  assert.equal(r.status, 200);
  const text = await r.text();
  return { text, ...parseMetrics(text) };
}

/** Sum of the samples named `name` whose labels include `labels`. */
export function metricValue(m, name, labels = {}) {
  return m.samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/** Counts of values: `tally(['a','b','a'])` → `{a: 2, b: 1}`. */
export function tally(values) {
  const out = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}
