// A fake OpenAI-compatible upstream for the gateway's integration tests.
//
// It speaks OpenAI's wire format (PROTOCOLS.md §1): JSON replies with OpenAI's response headers,
// SSE streams `data: {...}\n\n` … `data: [DONE]\n\n` replaying the recorded fixture
// `openai-text.chunks.txt`, embeddings from `openai-embedding.json`, and OpenAI's error bodies.
// It also imitates local servers' deviations (PROTOCOLS.md §5): vLLM's older top-level error,
// TGI's `{"error": "...", "error_type": ...}`, llama.cpp's numeric `code` and its non-standard
// `error: {...}` SSE line.
//
// Behaviour is chosen by the `model` in the request body (the gateway's `upstream_model`):
//
//   fixture-text (or any other name)  the recorded completion / recorded stream
//   error-400 | error-401 | error-404 | error-500 | error-503 | quota-429
//                                     OpenAI error bodies with that status
//   error-429                         429 rate_limit_exceeded, `retry-after: 1`
//   error-429-once                    429 with `retry-after: 1` on the first request to this fake,
//                                     the recorded completion afterwards
//   vllm-old-error                    400 `{"object":"error","message":..,"code":400}`
//   tgi-error                         422 `{"error":"..","error_type":"validation"}`
//   llama-http-error                  400 `{"error":{"code":400,"message":..,"type":..}}`
//   reset-mid-stream                  stream: 5 chunks, then a TCP reset (non-stream: reset at once)
//   llama-error-line                  stream: 5 chunks, then `error: {"code":500,...}` and end
//   llama-error-line-wrapped          same with `error: {"error":{...}}`
//   data-error-mid-stream             stream: 5 chunks, then `data: {"error":{...}}` and end
//   slow-stream                       stream: role chunk + 12 content chunks + finish (+ usage),
//                                     one every `slowChunkMs` (default 120 ms)
//   endless-stream                    stream: a content chunk every `slowChunkMs`, never ends
//   stall-mid-stream                  stream: 3 chunks, then silence with the connection open
//   no-usage-stream                   stream: the recorded chunks without any usage (no usage chunk,
//                                     no `usage` fields) even when `stream_options.include_usage`
//                                     is true, as some local servers do; not streamed: the
//                                     recorded completion without its `usage` field
//   null-output-usage                 not streamed: the recorded completion, its usage giving the
//                                     prompt count and `"completion_tokens": null`
//   float-usage                       not streamed: the recorded completion, its usage counts
//                                     written with a fraction (`"prompt_tokens": 19.0`)
//   hang                              reads the request, never answers
//   html-502                          502 with a proxy's text/html page
//   hop-headers                       the recorded completion plus hop-by-hop response headers
//   echo                              answers the last user message's text: whole, or streamed in
//                                     3-byte pieces (split anywhere, inside UTF-8 characters too, as
//                                     far as JSON strings allow: pieces are cut at code points);
//                                     streamed with n > 1: n answers, their chunks interleaved
//   echo-as-text                      echo, its stream sent as `content-type: text/plain` (as a
//                                     misconfigured local server might)
//
// Every request is recorded (method, path, headers, raw header list, raw and parsed body, times,
// whether the client closed it before the reply finished) so tests can assert what was sent.
import { EventEmitter, once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';

import { FIXTURES } from './paths.mjs';

/** The recorded fixtures, loaded once. */
export function loadFixtures() {
  const chatTextRaw = readFileSync(FIXTURES.chatText, 'utf8');
  const chunkLines = readFileSync(FIXTURES.chatTextChunks, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const embeddingRaw = readFileSync(FIXTURES.embedding, 'utf8');
  return {
    chatTextRaw,
    chatText: JSON.parse(chatTextRaw),
    chunks: chunkLines.map((l) => JSON.parse(l)),
    embeddingRaw,
    embedding: JSON.parse(embeddingRaw),
    legacyParamErrorRaw: readFileSync(FIXTURES.legacyParamError, 'utf8'),
    quotaErrorRaw: readFileSync(FIXTURES.quotaError, 'utf8'),
  };
}

const fixtures = loadFixtures();

/** Errors in OpenAI's shape, as a real upstream answers them. */
export const ERRORS = {
  'error-400': { status: 400, raw: fixtures.legacyParamErrorRaw },
  'error-401': {
    status: 401,
    body: {
      error: {
        message: 'Incorrect API key provided: sk-wrong. You can find your API key at https://platform.openai.com/account/api-keys.',
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_api_key',
      },
    },
  },
  'error-404': {
    status: 404,
    body: {
      error: {
        message: 'The model `error-404` does not exist or you do not have access to it.',
        type: 'invalid_request_error',
        param: null,
        code: 'model_not_found',
      },
    },
  },
  'error-429': {
    status: 429,
    headers: { 'retry-after': '1', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '1s' },
    body: {
      error: {
        message: 'Rate limit reached for gpt-4.1-nano in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.',
        type: 'requests',
        param: null,
        code: 'rate_limit_exceeded',
      },
    },
  },
  'quota-429': { status: 429, raw: fixtures.quotaErrorRaw },
  'error-500': {
    status: 500,
    body: {
      error: {
        message: 'The server had an error while processing your request. Sorry about that!',
        type: 'server_error',
        param: null,
        code: null,
      },
    },
  },
  'error-503': {
    status: 503,
    body: {
      error: {
        message: 'The engine is currently overloaded, please try again later.',
        type: 'server_error',
        param: null,
        code: null,
      },
    },
  },
  // vLLM before the OpenAI-shaped errors: a top-level object with a numeric code.
  'vllm-old-error': {
    status: 400,
    body: {
      object: 'error',
      message: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (1000 in the messages, 4000 in the completion). Please reduce the length of the messages or completion.",
      type: 'BadRequestError',
      param: null,
      code: 400,
    },
  },
  // Hugging Face TGI: `error` is a string, the kind is in `error_type`.
  'tgi-error': {
    status: 422,
    body: {
      error: 'Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 1000 `max_new_tokens`',
      error_type: 'validation',
    },
  },
  // llama.cpp llama-server: OpenAI-like, but `code` is the numeric HTTP status.
  'llama-http-error': {
    status: 400,
    body: {
      error: {
        code: 400,
        message: 'the request exceeds the available context size, try increasing it',
        type: 'exceed_context_size_error',
        n_prompt_tokens: 5000,
        n_ctx: 4096,
      },
    },
  },
};

/** The message each upstream error carries (what a caller should end up seeing). */
export function upstreamErrorMessage(model) {
  const e = ERRORS[model];
  if (!e) return undefined;
  const body = e.body ?? JSON.parse(e.raw);
  if (typeof body.error === 'string') return body.error;
  return body.error?.message ?? body.message;
}

/** The llama.cpp mid-stream error payload. */
export const LLAMA_STREAM_ERROR = { code: 500, message: 'llama fake: failed to decode the batch', type: 'server_error' };
/** The OpenAI-style mid-stream error payload (`data: {"error":...}`). */
export const DATA_STREAM_ERROR = {
  error: {
    message: 'The server had an error while processing your request. Sorry about that!',
    type: 'server_error',
    param: null,
    code: null,
  },
};

function openaiHeaders(extra = {}) {
  return {
    'x-request-id': `req_${randomBytes(16).toString('hex')}`,
    'openai-processing-ms': String(1 + Math.floor(Math.random() * 400)),
    'openai-version': '2020-10-01',
    'openai-organization': 'org-fake',
    'x-ratelimit-limit-requests': '10000',
    'x-ratelimit-limit-tokens': '200000',
    'x-ratelimit-remaining-requests': '9999',
    'x-ratelimit-remaining-tokens': '199975',
    'x-ratelimit-reset-requests': '6ms',
    'x-ratelimit-reset-tokens': '7ms',
    ...extra,
  };
}

/**
 * The chunks of the recorded stream as OpenAI would send them for this request body:
 * with `stream_options.include_usage` the recorded `usage: null` fields and the final usage chunk
 * (`choices: []`) are kept; without it, neither exists. `include_obfuscation: false` drops the
 * `obfuscation` padding.
 */
export function fixtureStreamChunks(body, chunks = fixtures.chunks) {
  const wantUsage = body?.stream_options?.include_usage === true;
  const keepObfuscation = body?.stream_options?.include_obfuscation !== false;
  const out = [];
  for (const c of chunks) {
    const chunk = structuredClone(c);
    if (!keepObfuscation) delete chunk.obfuscation;
    const isUsageChunk = Array.isArray(chunk.choices) && chunk.choices.length === 0 && chunk.usage;
    if (!wantUsage) {
      if (isUsageChunk) continue;
      delete chunk.usage;
    }
    out.push(chunk);
  }
  return out;
}

/** The `no-usage-stream` chunks: the recorded stream as if usage had not been asked for. */
export function noUsageStreamChunks(body) {
  const so = { ...(body?.stream_options ?? {}), include_usage: false };
  return fixtureStreamChunks({ ...body, stream_options: so });
}

/** A shortened recorded stream (role chunk, `n` content chunks, finish, usage) with matching usage. */
export function shortChunks(n) {
  const all = fixtures.chunks;
  const content = all.slice(1, 1 + n);
  const finish = all[all.length - 2];
  const usage = structuredClone(all[all.length - 1]);
  usage.usage.completion_tokens = n;
  usage.usage.total_tokens = usage.usage.prompt_tokens + n;
  return [all[0], ...content, finish, usage];
}

/** Text of the recorded stream. */
export const FIXTURE_STREAM_TEXT = fixtures.chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');

function embeddingsFor(body) {
  const input = body?.input;
  const n = Array.isArray(input) ? (input.length === 0 ? 0 : typeof input[0] === 'number' ? 1 : input.length) : 1;
  const src = fixtures.embedding;
  const data = [];
  for (let i = 0; i < n; i++) {
    const vec = src.data[i % src.data.length].embedding;
    let embedding = vec;
    if (body?.encoding_format === 'base64') {
      const f = new Float32Array(vec);
      embedding = Buffer.from(f.buffer).toString('base64');
    }
    data.push({ object: 'embedding', index: i, embedding });
  }
  return { object: 'list', data, model: src.model, usage: src.usage };
}

const HOP_BY_HOP_RESPONSE = {
  connection: 'keep-alive, x-upstream-hop',
  'x-upstream-hop': 'must-not-pass',
  'keep-alive': 'timeout=5, max=100',
  'proxy-authenticate': 'Basic realm="fake"',
};

/**
 * Starts the fake on 127.0.0.1:0. Options: `apiKey` (when set, requests without
 * `Authorization: Bearer <apiKey>` get 401), `slowChunkMs` (pace of the slow streams).
 * Returns `{ port, baseURL, requests, waitForRequest, reset, close, ... }`.
 */
export async function startFakeOpenAI({ apiKey, slowChunkMs = 120 } = {}) {
  const events = new EventEmitter();
  const requests = [];
  const counters = new Map();
  const timers = new Set();
  const sockets = new Set();

  const later = (ms, fn) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };

  const server = http.createServer({ keepAliveTimeout: 30000, requestTimeout: 0, headersTimeout: 60000 }, (req, res) => {
    const chunks = [];
    const rec = {
      seq: requests.length,
      method: req.method,
      path: req.url,
      httpVersion: req.httpVersion,
      headers: { ...req.headers },
      rawHeaders: [...req.rawHeaders],
      receivedAt: Date.now(),
      bodyText: undefined,
      body: undefined,
      finishedAt: undefined,
      closedAt: undefined,
      closedEarly: undefined,
      remotePort: req.socket.remotePort,
    };
    let closeResolve;
    rec.closed = new Promise((r) => (closeResolve = r));
    res.on('finish', () => {
      rec.finishedAt = Date.now();
    });
    res.on('close', () => {
      rec.closedAt = Date.now();
      rec.closedEarly = !res.writableFinished;
      closeResolve(rec);
      events.emit('closed', rec);
    });
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      rec.bodyText = Buffer.concat(chunks).toString('utf8');
      try {
        rec.body = rec.bodyText ? JSON.parse(rec.bodyText) : undefined;
      } catch {
        rec.body = undefined;
        rec.bodyInvalid = true;
      }
      requests.push(rec);
      events.emit('request', rec);
      handle(req, res, rec);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  function sendJson(res, status, body, extraHeaders = {}) {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      ...openaiHeaders(extraHeaders),
    });
    res.end(text);
  }

  function sendError(res, name) {
    const e = ERRORS[name];
    sendJson(res, e.status, e.raw ?? e.body, e.headers ?? {});
  }

  function notFound(res, rec) {
    sendJson(res, 404, {
      error: { message: `Invalid URL (${rec.method} ${rec.path})`, type: 'invalid_request_error', param: null, code: null },
    });
  }

  function startStream(res, contentType = 'text/event-stream; charset=utf-8') {
    res.writeHead(200, {
      'content-type': contentType,
      'cache-control': 'no-cache, must-revalidate',
      ...openaiHeaders(),
    });
    res.flushHeaders();
  }

  const writeData = (res, obj) => res.write(`data: ${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n\n`);

  /** Writes `list` one event at a time, `gapMs` apart (0: all at once), then `then()`. */
  function paced(res, list, gapMs, then) {
    let i = 0;
    const step = () => {
      if (res.destroyed || res.writableEnded) return;
      if (i >= list.length) return then();
      writeData(res, list[i++]);
      if (gapMs > 0) later(gapMs, step);
      else step();
    };
    step();
  }

  function finish(res, rec) {
    res.end('data: [DONE]\n\n');
  }

  // POST /v1/moderations in the shape of OpenAI's CreateModerationResponse (openapi.yaml): one
  // result per input. An input containing FLAGME is flagged (violence); MODFAIL answers 500 with
  // OpenAI's error body; MODSLOW never answers (the gateway's moderation timeout must act).
  function moderation(res, rec) {
    const inputs = [rec.body?.input ?? []].flat().map(String);
    if (inputs.some((t) => t.includes('MODSLOW'))) return;
    if (inputs.some((t) => t.includes('MODFAIL'))) {
      return sendError(res, 'error-500');
    }
    const names = ['harassment', 'harassment/threatening', 'hate', 'hate/threatening', 'illicit', 'illicit/violent', 'self-harm',
      'self-harm/intent', 'self-harm/instructions', 'sexual', 'sexual/minors', 'violence', 'violence/graphic'];
    const results = inputs.map((t) => {
      const flagged = t.includes('FLAGME');
      const categories = Object.fromEntries(names.map((n) => [n, flagged && n === 'violence']));
      const category_scores = Object.fromEntries(names.map((n) => [n, flagged && n === 'violence' ? 0.91 : 0.0001]));
      const category_applied_input_types = Object.fromEntries(names.map((n) => [n, ['text']]));
      return { flagged, categories, category_scores, category_applied_input_types };
    });
    return sendJson(res, 200, { id: `modr-${rec.seq}`, model: String(rec.body?.model ?? 'omni-moderation-latest'), results });
  }

  function handle(req, res, rec) {
    if (apiKey !== undefined && req.headers.authorization !== `Bearer ${apiKey}`) {
      return sendError(res, 'error-401');
    }
    if (req.method === 'GET' && rec.path === '/v1/models') {
      return sendJson(res, 200, {
        object: 'list',
        data: ['fixture-text', 'text-embedding-3-small'].map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'fake' })),
      });
    }
    if (req.method === 'POST' && rec.path === '/v1/moderations') return moderation(res, rec);
    const isChat = rec.path === '/v1/chat/completions';
    const isEmbed = rec.path === '/v1/embeddings';
    if (!isChat && !isEmbed) return notFound(res, rec);
    if (req.method !== 'POST') return notFound(res, rec);
    if (rec.bodyInvalid || typeof rec.body !== 'object' || rec.body === null) {
      return sendJson(res, 400, {
        error: {
          message: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
          type: 'invalid_request_error',
          param: null,
          code: null,
        },
      });
    }
    const body = rec.body;
    const model = String(body.model ?? '');
    const n = (counters.get(model) ?? 0) + 1;
    counters.set(model, n);

    if (model === 'hang') return; // never answer; the gateway's first-byte timeout must act
    if (model === 'html-502') { // a proxy in front of the upstream answering with its own page
      res.writeHead(502, { 'content-type': 'text/html; charset=utf-8' });
      return res.end('<html><body><h1>502 Bad Gateway</h1></body></html>');
    }
    if (model === 'error-429-once') {
      if (n === 1) return sendError(res, 'error-429');
    } else if (ERRORS[model]) {
      return sendError(res, model);
    }

    if (isEmbed) return sendJson(res, 200, embeddingsFor(body));

    const stream = body.stream === true;
    if (model === 'echo' || model === 'echo-as-text') {
      const last = [...(body.messages ?? [])].reverse().find((m) => m.role === 'user');
      const text = typeof last?.content === 'string' ? last.content : '';
      const base = { id: 'chatcmpl-echo', created: 1700000000, model: 'echo', system_fingerprint: null };
      if (!stream)
        return sendJson(res, 200, { ...base, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: 'stop' }], usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 } });
      startStream(res, model === 'echo-as-text' ? 'text/plain' : undefined);
      const cps = [...text];
      const chunk = (delta, finish = null, index = 0) => ({ ...base, object: 'chat.completion.chunk', choices: [{ index, delta, logprobs: null, finish_reason: finish }] });
      // n answers (each the same echo), their chunks interleaved as OpenAI's are: answer k starts
      // 2k pieces after answer 0, so later answers go on after earlier ones have finished.
      const n = Number.isInteger(body.n) && body.n > 1 ? body.n : 1;
      const lists = [];
      for (let k = 0; k < n; k++) {
        const own = [];
        for (let d = 0; d < 2 * k; d++) own.push(null);
        own.push(chunk({ role: 'assistant', content: '' }, null, k));
        for (let i = 0; i < cps.length; i += 3) own.push(chunk({ content: cps.slice(i, i + 3).join('') }, null, k));
        own.push(chunk({}, 'stop', k));
        lists.push(own);
      }
      const list = [];
      for (let i = 0; lists.some((l) => i < l.length); i++)
        for (const l of lists) if (i < l.length && l[i] !== null) list.push(l[i]);
      if (body.stream_options?.include_usage) list.push({ ...base, object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 } });
      for (const c of list) res.write(`data: ${JSON.stringify(c)}\n\n`);
      return finish(res, rec);
    }
    if (model === 'gzip-answer' || model === 'gzip-error') {
      // Compressed though the gateway asked for identity (a proxy that ignores Accept-Encoding).
      const text = model === 'gzip-error'
        ? JSON.stringify({ error: { message: 'bad', type: 'invalid_request_error', param: null, code: null } })
        : stream
          ? fixtureStreamChunks(body).map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n'
          : fixtures.chatTextRaw;
      const z = gzipSync(text);
      res.writeHead(model === 'gzip-error' ? 400 : 200, {
        'content-type': stream && model === 'gzip-answer' ? 'text/event-stream' : 'application/json',
        'content-encoding': 'gzip', 'content-length': z.length, ...openaiHeaders(),
      });
      return res.end(z);
    }
    if (!stream) {
      if (model === 'reset-mid-stream') return req.socket.resetAndDestroy();
      if (model === 'slow-body' || model === 'reset-mid-body') {
        // The 200 head and half the recorded answer; then, after a pause, the rest (slow-body) or
        // a reset (reset-mid-body): an answer generated in full whose body is slow or cut.
        const text = fixtures.chatTextRaw;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...openaiHeaders() });
        const half = Math.floor(text.length / 2);
        res.write(text.slice(0, half));
        if (model === 'reset-mid-body') return later(50, () => req.socket.resetAndDestroy());
        return later(slowChunkMs * 10, () => res.end(text.slice(half)));
      }
      if (model === 'stall-mid-stream' || model === 'endless-stream') return; // like hang
      if (model === 'no-usage-stream') {
        const { usage, ...rest } = fixtures.chatText;
        return sendJson(res, 200, rest);
      }
      if (model === 'null-output-usage') {
        const u = fixtures.chatText.usage;
        return sendJson(res, 200, { ...fixtures.chatText, usage: { prompt_tokens: u.prompt_tokens, completion_tokens: null, total_tokens: null } });
      }
      if (model === 'float-usage') {
        const u = fixtures.chatText.usage;
        const { usage, ...rest } = fixtures.chatText;
        const text = JSON.stringify(rest).replace(/}$/,
          `,"usage":{"prompt_tokens":${u.prompt_tokens}.0,"completion_tokens":${u.completion_tokens}.0,"total_tokens":${u.total_tokens}.0}}`);
        return sendJson(res, 200, text);
      }
      if (model === 'chunked-trailers') {
        // The recorded completion in chunks, then trailer fields (Node writes them after the
        // last chunk): many and long, so that keeping them would grow a parser's storage.
        const trailers = {};
        for (let i = 0; i < 40; i++) trailers[`x-trailer-${i}`] = 't'.repeat(60);
        res.writeHead(200, { 'content-type': 'application/json', trailer: Object.keys(trailers).join(', '), ...openaiHeaders() });
        const text = fixtures.chatTextRaw;
        for (let i = 0; i < text.length; i += 97) res.write(text.slice(i, i + 97));
        res.addTrailers(trailers);
        return res.end();
      }
      const extra = model === 'hop-headers' ? HOP_BY_HOP_RESPONSE : {};
      const send = () => sendJson(res, 200, fixtures.chatTextRaw, extra);
      if (model === 'slow-stream') return later(slowChunkMs * 5, send);
      return send();
    }

    // Streaming.
    startStream(res);
    switch (model) {
      case 'reset-mid-stream':
        return paced(res, fixtureStreamChunks(body).slice(0, 5), 0, () => later(50, () => req.socket.resetAndDestroy()));
      case 'llama-error-line':
      case 'llama-error-line-wrapped':
        return paced(res, fixtureStreamChunks(body).slice(0, 5), 0, () => {
          const payload = model === 'llama-error-line' ? LLAMA_STREAM_ERROR : { error: LLAMA_STREAM_ERROR };
          res.end(`error: ${JSON.stringify(payload)}\n\n`);
        });
      case 'data-error-mid-stream':
        return paced(res, fixtureStreamChunks(body).slice(0, 5), 0, () => {
          res.end(`data: ${JSON.stringify(DATA_STREAM_ERROR)}\n\n`);
        });
      case 'slow-stream':
        return paced(res, fixtureStreamChunks(body, shortChunks(12)), slowChunkMs, () => finish(res, rec));
      case 'endless-stream': {
        const content = fixtureStreamChunks(body).slice(1, -2);
        let i = 0;
        const step = () => {
          if (res.destroyed || res.writableEnded) return;
          writeData(res, content[i++ % content.length]);
          later(slowChunkMs, step);
        };
        writeData(res, fixtureStreamChunks(body)[0]);
        return later(slowChunkMs, step);
      }
      case 'stall-mid-stream':
        return paced(res, fixtureStreamChunks(body).slice(0, 3), 0, () => {}); // then silence
      case 'done-then-hold': // [DONE], and the body held open (a proxy that keeps the last chunk)
        return paced(res, fixtureStreamChunks(body), 0, () => res.write('data: [DONE]\n\n'));
      case 'split-data-lines': { // legal SSE: each chunk's JSON over two data lines
        for (const c of fixtureStreamChunks(body)) {
          const text = JSON.stringify(c);
          const cut = text.indexOf(',"choices"');
          res.write(`data: ${text.slice(0, cut + 1)}\ndata: ${text.slice(cut + 1)}\n\n`);
        }
        return finish(res, rec);
      }
      case 'no-usage-stream':
        return paced(res, noUsageStreamChunks(body), 0, () => finish(res, rec));
      default:
        return paced(res, fixtureStreamChunks(body), 0, () => finish(res, rec));
    }
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();

  return {
    port,
    /** base_url for the gateway config and the SDK. */
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    /** Requests for a given upstream model (the rewritten `model`). */
    requestsFor: (model) => requests.filter((r) => r.body?.model === model),
    /** Resolves with the first recorded request (past or future) matching `pred`. */
    waitForRequest(pred = () => true, timeoutMs = 5000) {
      const found = requests.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const onReq = (r) => {
          if (!pred(r)) return;
          clearTimeout(t);
          events.off('request', onReq);
          resolve(r);
        };
        const t = setTimeout(() => {
          events.off('request', onReq);
          reject(new Error(`fake upstream: no matching request within ${timeoutMs} ms (saw ${requests.length})`));
        }, timeoutMs);
        events.on('request', onReq);
      });
    },
    /** Resolves when `rec`'s response is closed (finished or cut); rejects after `timeoutMs`. */
    waitClosed(rec, timeoutMs = 5000) {
      let t;
      return Promise.race([
        rec.closed.finally(() => clearTimeout(t)),
        new Promise((_, reject) => {
          t = setTimeout(() => reject(new Error(`fake upstream: request ${rec.seq} (${rec.body?.model}) still open after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    },
    /** Forgets recorded requests and per-model counters. */
    reset() {
      requests.length = 0;
      counters.clear();
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      server.closeAllConnections?.();
      await new Promise((r) => server.close(() => r()));
    },
  };
}
