// A fake Azure OpenAI resource for the gateway's integration tests (PROTOCOLS.md §2).
//
// URLs: the dated API `/openai/deployments/{deployment}/{chat/completions|embeddings}?api-version=V`
// (without api-version Azure answers 404 "Resource not found") and the v1 API
// `/openai/v1/{chat/completions|embeddings}` with the deployment as `model`. Auth: the `api-key`
// header; a wrong or missing key gets Azure's 401 body (code "401", no type).
//
// Streams replay the real recorded Azure stream `azure-model-router.1.chunks.txt`: a first chunk
// with empty `choices`, `id`, `model` and `prompt_filter_results`, chunks with per-choice
// `content_filter_results`, a finish chunk, a usage chunk when `stream_options.include_usage`, then
// `data: [DONE]`. Whole answers are that stream's content assembled the way Azure shapes a chat
// completion (with `prompt_filter_results` and per-choice `content_filter_results`).
//
// Microsoft Entra ID: `POST /{tenant}/oauth2/v2.0/token` (the gateway's `entra.authority` points
// here) takes a client-credentials form (client_id, client_secret, scope
// https://cognitiveservices.azure.com/.default) and issues a bearer token, which the API then
// accepts instead of `api-key`; wrong client credentials get Entra's 401 `invalid_client` body.
//
// Behaviour by deployment name:
//   any name              the recorded answer (stream or whole)
//   prompt-filtered       400 content_filter body (type null, param "prompt", innererror)
//   throttled             429 with code "429" as a string, retry-after and retry-after-ms
//   output-filtered       stream: two content chunks, then finish_reason "content_filter"
//
// A dated api-version older than 2024-09-01-preview does not know `stream_options` and answers
// 400 "Unrecognized request argument supplied: stream_options", as Azure does (openai-python #1469,
// azure-rest-api-specs #29157; accepted from 2024-09-01-preview and the GA 2024-10-21 on).
import { readFileSync } from 'node:fs';

import { FIXTURES } from './paths.mjs';
import { startRecordingServer } from './recording_server.mjs';

const chunks = readFileSync(FIXTURES.azureStreamChunks, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
const embedding = JSON.parse(readFileSync(FIXTURES.embedding, 'utf8'));

/** The recorded stream's text and usage. */
export const AZURE_STREAM_TEXT = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
export const AZURE_STREAM_USAGE = chunks.find((c) => c.usage)?.usage;

const promptFilter = chunks[0].prompt_filter_results;
const choiceFilter = chunks.find((c) => c.choices?.[0]?.content_filter_results?.hate)?.choices[0].content_filter_results;

function wholeAnswer(model) {
  const last = chunks.find((c) => c.id);
  return {
    choices: [{ content_filter_results: choiceFilter, finish_reason: 'stop', index: 0, logprobs: null,
      message: { annotations: [], content: AZURE_STREAM_TEXT, refusal: null, role: 'assistant' } }],
    created: last.created, id: last.id, model: last.model ?? model, object: 'chat.completion',
    prompt_filter_results: promptFilter, system_fingerprint: null, usage: AZURE_STREAM_USAGE,
  };
}

export const AZURE_ERRORS = {
  unrecognizedStreamOptions: { error: { message: 'Unrecognized request argument supplied: stream_options', type: 'invalid_request_error', param: null, code: null } },
  unauthorized: { error: { code: '401', message: 'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.' } },
  notFound: { error: { code: '404', message: 'Resource not found' } },
  promptFiltered: { error: { message: "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.", type: null, param: 'prompt', code: 'content_filter', status: 400,
    innererror: { code: 'ResponsibleAIPolicyViolation', content_filter_result: { hate: { filtered: true, severity: 'high' }, self_harm: { filtered: false, severity: 'safe' }, sexual: { filtered: false, severity: 'safe' }, violence: { filtered: false, severity: 'safe' } } } } },
  throttled: { error: { code: '429', message: 'Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds.' } },
};

export async function startFakeAzure({ apiKey, entra }) {
  const tokens = new Set();
  const srv = await startRecordingServer(handle);
  const headers = (extra = {}) => ({ 'content-type': 'application/json', 'apim-request-id': 'f4a1c2d3-0000-4000-8000-000000000001', 'x-ms-region': 'Sweden Central', 'x-request-id': 'azure-req-1', ...extra });
  const send = (res, status, obj, extra) => {
    const b = JSON.stringify(obj);
    res.writeHead(status, headers({ 'content-length': Buffer.byteLength(b), ...extra }));
    res.end(b);
  };
  function handle(req, res, rec, url) {
    let deployment, op;
    const tm = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
    if (tm && req.method === 'POST') {
      const f = new URLSearchParams(rec.bodyText);
      rec.form = Object.fromEntries(f);
      if (!entra || tm[1] !== entra.tenantId || f.get('client_id') !== entra.clientId || f.get('client_secret') !== entra.clientSecret)
        return send(res, 401, { error: 'invalid_client', error_description: 'AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.', error_codes: [7000215] });
      if (f.get('grant_type') !== 'client_credentials' || f.get('scope') !== 'https://cognitiveservices.azure.com/.default')
        return send(res, 400, { error: 'invalid_request', error_description: 'AADSTS90014: bad grant or scope' });
      const t = `eyJ0eXAiOiJKV1Qi.fake.${tokens.size + 1}`;
      tokens.add(t);
      return send(res, 200, { token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token: t });
    }
    let m = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|embeddings)$/.exec(url.pathname);
    if (m) {
      deployment = decodeURIComponent(m[1]);
      op = m[2];
      if (!url.searchParams.get('api-version')) return send(res, 404, AZURE_ERRORS.notFound);
      if (url.searchParams.get('api-version') < '2024-09-01' && rec.body && 'stream_options' in rec.body)
        return send(res, 400, AZURE_ERRORS.unrecognizedStreamOptions);
    } else if ((m = /^\/openai\/v1\/(chat\/completions|embeddings)$/.exec(url.pathname))) {
      op = m[1];
      deployment = rec.body?.model;
    } else {
      return send(res, 404, AZURE_ERRORS.notFound);
    }
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (req.headers['api-key'] !== apiKey && !(bearer && tokens.has(bearer))) return send(res, 401, AZURE_ERRORS.unauthorized);
    if (deployment === 'prompt-filtered') return send(res, 400, AZURE_ERRORS.promptFiltered);
    if (deployment === 'throttled') return send(res, 429, AZURE_ERRORS.throttled, { 'retry-after': '6', 'retry-after-ms': '6000', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-remaining-tokens': '0' });
    if (op === 'embeddings') return send(res, 200, embedding);
    if (!rec.body?.stream) return send(res, 200, wholeAnswer(deployment));
    res.writeHead(200, headers({ 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' }));
    const usage = rec.body.stream_options?.include_usage === true;
    let list = chunks.filter((c) => usage || !(c.usage && c.choices.length === 0));
    if (deployment === 'output-filtered') {
      const content = chunks.filter((c) => c.choices?.[0]?.delta?.content).slice(0, 2);
      const finish = { ...chunks.find((c) => c.choices?.[0]?.finish_reason) };
      finish.choices = [{ ...finish.choices[0], finish_reason: 'content_filter', content_filter_results: { hate: { filtered: true, severity: 'medium' } } }];
      list = [chunks[0], ...content, finish, ...(usage ? [chunks.at(-1)] : [])];
    }
    for (const c of list) res.write(`data: ${JSON.stringify(c)}\n\n`);
    res.end('data: [DONE]\n\n');
  }
  return {
    requests: srv.requests,
    events: srv.events,
    tokens,
    url: srv.url,
    close: srv.close,
  };
}
