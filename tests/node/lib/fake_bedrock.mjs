// A fake Amazon Bedrock Runtime for the gateway's integration tests (PROTOCOLS.md §3).
//
// It checks every request's SigV4 signature with the official AWS signer (@smithy/signature-v4,
// service `bedrock`, the region it was started with): it takes the SignedHeaders list from the
// request's Authorization header, signs those headers of the received request again at the
// request's x-amz-date, and refuses any difference with Bedrock's 403 InvalidSignatureException.
//
// Operations: POST /model/{modelId}/converse (JSON), /model/{modelId}/converse-stream (binary
// `application/vnd.amazon.eventstream`, each message encoded with the official
// @smithy/eventstream-codec: headers `:event-type`, `:content-type`, `:message-type`, a payload
// with Bedrock's `"p"` padding), /model/{modelId}/invoke (Titan and Cohere embeddings).
// Answers replay the recorded Bedrock fixtures (vercel-ai-fixtures amazon-bedrock-*).
//
// Behaviour by model id (decoded from the path):
//   anything                    amazon-bedrock-text (converse / converse-stream)
//   *tool*                      amazon-bedrock-tool-call.1
//   throttled                   429 ThrottlingException
//   invalid                     400 ValidationException
//   stream-throttled            stream: 3 events, then a throttlingException exception message
//   amazon.titan-embed-text-v2:0, cohere.embed-*   embeddings (invoke)
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { EventStreamCodec } from '@smithy/eventstream-codec';
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';

import { TESTDATA } from './paths.mjs';
import { startRecordingServer } from './recording_server.mjs';

const dir = join(TESTDATA, 'vercel-ai-fixtures', 'packages', 'amazon-bedrock', 'src', '__fixtures__');
const load = (name) => ({
  body: JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')),
  events: readFileSync(join(dir, `${name}.chunks.txt`), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)),
});
/** The input token count the fake reports for Cohere embeddings (its header): ⌈chars/4⌉ + 1 a text. */
export const cohereTokens = (texts) => texts.reduce((n, t) => n + Math.ceil(t.length / 4) + 1, 0);

export const BEDROCK_TEXT = load('amazon-bedrock-text');
export const BEDROCK_TOOL = load('amazon-bedrock-tool-call.1');

const codec = new EventStreamCodec(toUtf8, fromUtf8);
const str = (value) => ({ type: 'string', value });
function frame(eventType, payload, kind = 'event') {
  const headers = kind === 'event'
    ? { ':event-type': str(eventType), ':content-type': str('application/json'), ':message-type': str('event') }
    : { ':exception-type': str(eventType), ':content-type': str('application/json'), ':message-type': str('exception') };
  const body = JSON.stringify({ ...payload, p: 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJ' });
  return Buffer.from(codec.encode({ headers, body: fromUtf8(body) }));
}

export async function startFakeBedrock({ accessKeyId, secretAccessKey, sessionToken, region = 'us-east-1' }) {
  // applyChecksum off: Bedrock clients do not send x-amz-content-sha256 (that is S3's).
  const signer = new SignatureV4({ credentials: { accessKeyId, secretAccessKey, sessionToken }, region, service: 'bedrock', sha256: Hash.bind(null, 'sha256'), applyChecksum: false });

  const send = (res, status, obj, errType, extra = {}) => {
    const b = JSON.stringify(obj);
    const h = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b), 'x-amzn-requestid': 'b0f1c2d3-1111-4222-8333-944455556666', ...extra };
    if (errType) h['x-amzn-errortype'] = `${errType}:http://internal.amazon.com/coral/com.amazon.bedrock/`;
    res.writeHead(status, h);
    res.end(b);
  };

  async function signatureOk(req, rec) {
    const auth = req.headers.authorization ?? '';
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) return 'malformed Authorization header';
    const [, akid, , reg, service, signed, signature] = m;
    if (akid !== accessKeyId || reg !== region || service !== 'bedrock') return `scope ${akid}/${reg}/${service}`;
    const amzDate = req.headers['x-amz-date'];
    if (!/^\d{8}T\d{6}Z$/.test(amzDate ?? '')) return 'no x-amz-date';
    const date = new Date(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`);
    const headers = {};
    for (const name of signed.split(';')) {
      if (req.headers[name] === undefined) return `signed header ${name} missing`;
      headers[name] = req.headers[name];
    }
    const url = new URL(req.url, 'http://x');
    const query = Object.fromEntries(url.searchParams);
    const hr = new HttpRequest({ method: req.method, protocol: 'http:', hostname: headers.host?.split(':')[0] ?? '127.0.0.1', path: url.pathname, query, headers, body: rec.bodyText });
    const unsignable = new Set(Object.keys(req.headers).filter((h) => !signed.split(';').includes(h)));
    const expected = await signer.sign(hr, { signingDate: date, unsignableHeaders: unsignable });
    const want = /Signature=([0-9a-f]{64})/.exec(expected.headers.authorization)?.[1];
    return want === signature ? undefined : `signature mismatch (expected ${expected.headers.authorization})`;
  }

  const srv = await startRecordingServer(async (req, res, rec) => {
    const why = await signatureOk(req, rec);
    rec.signatureError = why;
    if (why) return send(res, 403, { message: 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.' }, 'InvalidSignatureException');
    const m = /^\/model\/([^/]+)\/(converse|converse-stream|invoke)$/.exec(new URL(req.url, 'http://x').pathname);
    if (!m || req.method !== 'POST') return send(res, 404, { message: 'Not Found' }, 'UnknownOperationException');
    const model = decodeURIComponent(m[1]);
    rec.model = model;
    const op = m[2];
    if (model === 'throttled') return send(res, 429, { message: 'Too many requests, please wait before trying again.' }, 'ThrottlingException');
    if (model === 'invalid') return send(res, 400, { message: 'Malformed input request, please reformat your input and try again.' }, 'ValidationException');
    if (op === 'invoke') {
      // InvokeModel answers carry the token counts in headers, for every model; Cohere's body has none.
      if (model.startsWith('amazon.titan-embed'))
        return send(res, 200, { embedding: [0.125, -0.25, 0.5, 0.75], embeddingsByType: { float: [0.125, -0.25, 0.5, 0.75] }, inputTextTokenCount: 5 }, undefined,
          { 'x-amzn-bedrock-input-token-count': '5', 'x-amzn-bedrock-invocation-latency': '12' });
      if (model.startsWith('cohere.embed')) {
        const texts = rec.body?.texts ?? [];
        return send(res, 200, { embeddings: texts.map((_, i) => [i, 0.5, -0.5]), id: 'emb-1', response_type: 'embeddings_floats', texts }, undefined,
          { 'X-Amzn-Bedrock-Input-Token-Count': String(cohereTokens(texts)), 'x-amzn-bedrock-invocation-latency': '12' });
      }
      return send(res, 400, { message: 'The provided model identifier is invalid.' }, 'ValidationException');
    }
    const fx = model.includes('tool') ? BEDROCK_TOOL : BEDROCK_TEXT;
    if (op === 'converse') return send(res, 200, fx.body);
    res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-requestid': 'b0f1c2d3-1111-4222-8333-944455556667', 'transfer-encoding': 'chunked' });
    // stream-cut: every event up to the answer's end, then a clean close without messageStop.
    const list = model === 'stream-throttled' ? fx.events.slice(0, 3)
      : model === 'stream-cut' ? fx.events.filter((e) => !('messageStop' in e) && !('metadata' in e))
        : fx.events;
    for (const e of list) {
      const [type, payload] = Object.entries(e)[0];
      res.write(frame(type, payload));
    }
    if (model === 'stream-throttled') res.write(frame('throttlingException', { message: 'Too many tokens, please wait before trying again.' }, 'exception'));
    res.end();
  });
  return {
    requests: srv.requests,
    events: srv.events,
    url: srv.url,
    close: srv.close,
  };
}
