// The HTTP server under the provider fakes (Azure, Bedrock, Vertex): it reads each request whole,
// records it ({method, path, pathname, query, headers, bodyText, body}) in `requests`, emits it as
// 'request' on `events`, then hands it to `handle(req, res, rec, url)`.
import { EventEmitter } from 'node:events';
import http from 'node:http';

export async function startRecordingServer(handle) {
  const requests = [];
  const events = new EventEmitter();
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const url = new URL(req.url, 'http://x');
      const rec = { method: req.method, path: req.url, pathname: url.pathname, query: Object.fromEntries(url.searchParams), headers: { ...req.headers }, bodyText: Buffer.concat(parts).toString('utf8') };
      try { rec.body = JSON.parse(rec.bodyText); } catch { rec.body = undefined; }
      requests.push(rec);
      events.emit('request', rec);
      handle(req, res, rec, url);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    requests,
    events,
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}
