// Upstream keep-alive pool: connections the upstream closed while idle must never surface as
// errors to callers (Node closes idle keep-alive connections after 5 s, nginx after 75 s).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { test } from 'node:test';

import { delay, serverYaml, startGateway } from './lib/gateway.mjs';

const COMPLETION = JSON.stringify({
  id: 'chatcmpl-pool', object: 'chat.completion', created: 1732000000, model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok', refusal: null }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
});

test('idle pooled connections closed by the upstream are not reused', async () => {
  let connections = 0;
  const up = http.createServer({ keepAliveTimeout: 150 }, (req, res) => {
    req.resume();
    req.on('end', () => {
      // A little delay so that concurrent requests need several pooled connections.
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(COMPLETION), 20);
    });
  });
  up.on('connection', () => connections++);
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const gw = await startGateway(serverYaml({ workers: 1 }) + `providers:
  - {name: up, type: openai_compatible, base_url: "http://127.0.0.1:${up.address().port}/v1"}
models:
  - {name: m, provider: up}
`);
  const burst = () =>
    Promise.all(Array.from({ length: 12 }, () =>
      fetch(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }) }).then((r) => r.status)));
  try {
    for (let round = 0; round < 4; ++round) {
      const statuses = await burst();
      assert.deepEqual(statuses, Array(12).fill(200), `round ${round}`);
      await delay(400);  // longer than the upstream's keep-alive timeout: every pooled connection is now closed
    }
    assert.ok(connections >= 8, `the upstream saw ${connections} connections; pooled ones were closed and replaced`);
  } finally {
    await gw.stopClean();
    up.closeAllConnections();
    up.close();
  }
});
