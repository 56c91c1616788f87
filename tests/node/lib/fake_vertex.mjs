// A fake Google Vertex AI (and its OAuth token endpoint) for the gateway's integration tests
// (PROTOCOLS.md §4).
//
// Token endpoint `POST /token` (the service-account key's token_uri points here): a form body
// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`; the JWT's RS256
// signature is verified with the public key of the test service account
// (google-auth-service-account/privatekey.pub), and its claims (iss, aud, scope, exp - iat <= 3600)
// are checked; then `{"access_token","expires_in":3599,"token_type":"Bearer"}`. Bad assertions
// get Google's `{"error":"invalid_grant","error_description":...}` with 400.
//
// Vertex: `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`,
// `:streamGenerateContent?alt=sse` (SSE `data: <GenerateContentResponse>` events, no [DONE]) and
// `:predict`, all requiring `Authorization: Bearer <a token it issued>` (else 401 UNAUTHENTICATED
// in Google's error shape). Answers replay the recorded fixtures (vercel-ai-fixtures google-text,
// google-vertex-embedding, google-429-retry-info for the model `quota-exceeded`).
import { createPublicKey, createVerify, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { TESTDATA } from './paths.mjs';
import { startRecordingServer } from './recording_server.mjs';

const g = join(TESTDATA, 'vercel-ai-fixtures', 'packages', 'google', 'src', '__fixtures__');
export const GEMINI_TEXT = JSON.parse(readFileSync(join(g, 'google-text.json'), 'utf8'));
export const GEMINI_CHUNKS = readFileSync(join(g, 'google-text.chunks.txt'), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
const QUOTA = JSON.parse(readFileSync(join(g, 'google-429-retry-info.json'), 'utf8'));
const EMBED = JSON.parse(readFileSync(join(TESTDATA, 'vercel-ai-fixtures', 'packages', 'google-vertex', 'src', '__fixtures__', 'google-vertex-embedding.json'), 'utf8'));
const SA_DIR = join(TESTDATA, 'google-auth-service-account');
export const SERVICE_ACCOUNT = JSON.parse(readFileSync(join(SA_DIR, 'service_account.json'), 'utf8'));
const PUBLIC_KEY = createPublicKey(readFileSync(join(SA_DIR, 'privatekey.pub')));

const b64urlJson = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));

export async function startFakeVertex() {
  const tokens = new Set();
  const sendJson = (res, status, obj) => {
    const b = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(b) });
    res.end(b);
  };
  const googleError = (res, status, statusName, message) => sendJson(res, status, { error: { code: status, message, status: statusName } });

  function token(req, res, rec) {
    const form = new URLSearchParams(rec.bodyText);
    rec.assertion = form.get('assertion');
    const bad = (why) => sendJson(res, 400, { error: 'invalid_grant', error_description: why });
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return bad('Invalid grant_type.');
    const parts = (rec.assertion ?? '').split('.');
    if (parts.length !== 3) return bad('Invalid JWT.');
    const v = createVerify('RSA-SHA256');
    v.update(`${parts[0]}.${parts[1]}`);
    if (!v.verify(PUBLIC_KEY, Buffer.from(parts[2], 'base64url'))) return bad('Invalid JWT Signature.');
    const header = b64urlJson(parts[0]);
    const claims = b64urlJson(parts[1]);
    rec.jwt = { header, claims };
    if (header.alg !== 'RS256' || claims.iss !== SERVICE_ACCOUNT.client_email || claims.aud !== 'https://oauth2.googleapis.com/token' ||
      !String(claims.scope).includes('https://www.googleapis.com/auth/cloud-platform') || claims.exp - claims.iat > 3600 ||
      Math.abs(claims.iat - Date.now() / 1000) > 300)
      return bad('Invalid JWT claims.');
    const t = `ya29.fake-${randomBytes(12).toString('hex')}`;
    tokens.add(t);
    sendJson(res, 200, { access_token: t, expires_in: 3599, token_type: 'Bearer' });
  }

  const srv = await startRecordingServer((req, res, rec, url) => {
    if (url.pathname === '/token' && req.method === 'POST') return token(req, res, rec);
    const m = /^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/publishers\/google\/models\/([^/:]+):(generateContent|streamGenerateContent|predict)$/.exec(url.pathname);
    if (!m) return googleError(res, 404, 'NOT_FOUND', `The requested URL ${url.pathname} was not found on this server.`);
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!auth || !tokens.has(auth[1])) return googleError(res, 401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
    [, rec.project, rec.location, rec.model, rec.method] = m;
    if (rec.model === 'quota-exceeded') return sendJson(res, 429, QUOTA);
    if (rec.method === 'predict') return sendJson(res, 200, { ...EMBED, predictions: EMBED.predictions.slice(0, rec.body?.instances?.length ?? 1) });
    if (rec.method === 'generateContent') return sendJson(res, 200, GEMINI_TEXT);
    if (rec.query.alt !== 'sse') return googleError(res, 400, 'INVALID_ARGUMENT', 'this fake only streams with alt=sse');
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (const c of GEMINI_CHUNKS) res.write(`data: ${JSON.stringify(c)}\r\n\r\n`);
    res.end();
  });
  return {
    requests: srv.requests,
    events: srv.events,
    tokens,
    url: srv.url,
    close: srv.close,
  };
}
