// Time to first token of streamed chat completions: POSTs `--n` streamed requests one after the
// other to `--url` and measures, for each, the time from sending to the first SSE chunk that
// carries delta.content text (not the first byte: the role chunk comes before any text).
// Prints {"requests":n,"first_token_p50_ms":..,"first_token_p99_ms":..}. Node 18+ (fetch).
const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const url = args.url;
const n = Number(args.n ?? 50);
const body = JSON.stringify({ model: args.model ?? 'bench-stream', stream: true, messages: [{ role: 'user', content: 'Say something.' }] });
const times = [];
for (let i = 0; i < n; i++) {
  const t0 = performance.now();
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  if (res.status !== 200) throw new Error(`status ${res.status}`);
  const dec = new TextDecoder();
  let buf = '';
  let first;
  const reader = res.body.getReader();
  while (first === undefined) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let k;
    while (first === undefined && (k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith('data: {')) continue;
      const c = JSON.parse(ev.slice(6));
      if (c.choices?.[0]?.delta?.content) first = performance.now() - t0;
    }
  }
  await reader.cancel();  // the rest of the answer is not measured
  if (first === undefined) throw new Error('no content in the stream');
  times.push(first);
}
times.sort((a, b) => a - b);
const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(2);
console.log(JSON.stringify({ requests: n, first_token_p50_ms: Number(q(0.5)), first_token_p99_ms: Number(q(0.99)) }));
