// Locations shared by every test file: the repository, the gateway binary and the test data.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Repository root: two levels above tests/node. */
export const REPO = resolve(here, '..', '..', '..');

/** The gateway binary under test (TOLLGATE_BIN overrides). */
export const GATEWAY_BIN = process.env.TOLLGATE_BIN ?? join(REPO, 'build', 'dev', 'gateway', 'tollgate');

/** Shared test data (never copied into the project; TOLLGATE_TESTDATA overrides). */
export const TESTDATA = process.env.TOLLGATE_TESTDATA ?? join(REPO, '..', 'shared', 'testdata');

const vercel = join(TESTDATA, 'vercel-ai-fixtures', 'packages');

/** Paths of the recorded fixtures the fake upstream replays. */
export const FIXTURES = {
  chatText: join(vercel, 'openai', 'src', 'chat', '__fixtures__', 'openai-text.json'),
  chatTextChunks: join(vercel, 'openai', 'src', 'chat', '__fixtures__', 'openai-text.chunks.txt'),
  legacyParamError: join(vercel, 'openai', 'src', 'chat', '__fixtures__', 'reasoning-model-legacy-parameter-error.json'),
  quotaError: join(vercel, 'openai', 'src', 'responses', '__fixtures__', 'openai-error.1.json'),
  embedding: join(vercel, 'openai', 'src', 'embedding', '__fixtures__', 'openai-embedding.json'),
  toolCallSse: join(vercel, 'openai-compatible', 'src', 'chat', '__fixtures__', 'anthropic-fallback-tool-call.sse'),
  azureStreamChunks: join(vercel, 'openai', 'src', 'chat', '__fixtures__', 'azure-model-router.1.chunks.txt'),
};
