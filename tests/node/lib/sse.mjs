// A small, strict-enough Server-Sent Events reader used to look at the gateway's exact framing
// (the openai SDK hides event names and timing; these helpers keep both).

/**
 * Incremental SSE parser (WHATWG rules: fields `event`, `data`, `id`, `retry`, comments start
 * with ':'; lines end with LF, CRLF or CR; an empty line dispatches the event).
 * Unknown field names (for example llama.cpp's `error:`) are kept in `fields` so that callers can
 * see them, even though a browser would ignore them.
 */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.pending = { event: undefined, data: [], fields: {} };
    this.events = [];
  }

  /** Feeds text; returns the events completed by it. */
  push(text) {
    this.buffer += text;
    const out = [];
    for (;;) {
      const m = /\r\n|\n|\r/.exec(this.buffer);
      if (!m) break;
      // A lone CR at the very end may be the first half of CRLF: wait for more.
      if (m[0] === '\r' && m.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      if (line === '') {
        if (this.pending.data.length || this.pending.event !== undefined || Object.keys(this.pending.fields).length) {
          const ev = {
            event: this.pending.event,
            data: this.pending.data.join('\n'),
            hasData: this.pending.data.length > 0,
            fields: this.pending.fields,
          };
          out.push(ev);
          this.events.push(ev);
        }
        this.pending = { event: undefined, data: [], fields: {} };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (name === 'data') this.pending.data.push(value);
      else if (name === 'event') this.pending.event = value;
      else this.pending.fields[name] = value;
    }
    return out;
  }

  /** Text left after the last complete line (should be '' at the end of a well-formed stream). */
  get rest() {
    return this.buffer;
  }
}

/**
 * Reads a fetch() Response body as SSE. Returns
 * `{ events: [{event, data, json, at}], done, error, ended, rawText }` where `done` says whether
 * `data: [DONE]` was seen, `ended` whether the body closed cleanly, `error` the body read error.
 * `onEvent(ev)` is called as events arrive (for timing); returning `false` stops reading and
 * cancels the body (the client side of a disconnect).
 */
export async function readSse(response, { onEvent, timeoutMs = 20000 } = {}) {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const result = { events: [], done: false, ended: false, timedOut: false, error: undefined, rawText: '' };
  const reader = response.body.getReader();
  const timer = setTimeout(() => {
    result.timedOut = true;
    reader.cancel(new Error(`readSse: no end within ${timeoutMs} ms`)).catch(() => {});
  }, timeoutMs);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        result.ended = !result.timedOut;
        break;
      }
      const text = decoder.decode(value, { stream: true });
      result.rawText += text;
      for (const ev of parser.push(text)) {
        ev.at = Date.now();
        if (ev.data === '[DONE]') result.done = true;
        else if (ev.hasData) {
          try {
            ev.json = JSON.parse(ev.data);
          } catch {
            ev.json = undefined;
          }
        }
        result.events.push(ev);
        if (onEvent && (await onEvent(ev, result)) === false) {
          result.stopped = true;
          await reader.cancel().catch(() => {});
          return result;
        }
      }
    }
  } catch (e) {
    result.error = e;
  } finally {
    clearTimeout(timer);
  }
  result.rest = parser.rest;
  return result;
}

/** Concatenated `choices[0].delta.content` of chat chunks. */
export function contentOf(chunks) {
  return chunks.map((c) => c?.choices?.[0]?.delta?.content ?? '').join('');
}
