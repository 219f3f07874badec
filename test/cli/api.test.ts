/**
 * `ferry api` as a process: refuses to start without tokens or with a bad token list (exit 2, one line naming
 * the mistake), serves with a token kept as its SHA-256 in a YAML file, and shuts down cleanly on SIGTERM.
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { runFerry, spawnFerry, tempDir, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const TOKEN = 'ferry-api-process-token-0123456789';

async function servicesFile(): Promise<string> {
  return writeServicesFile({
    services: { svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } } },
  });
}

describe('ferry api', () => {
  it('refuses to start without tokens, naming the variables (exit 2)', async () => {
    const result = await runFerry(['api'], {
      env: { REDIS_URL: redis.url, FERRY_SERVICES: await servicesFile(), PORT: '0' },
    });
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain('FERRY_API_TOKENS');
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('refuses a bad token list with the path of the mistake (exit 2)', async () => {
    const result = await runFerry(['api'], {
      env: {
        REDIS_URL: redis.url,
        FERRY_SERVICES: await servicesFile(),
        PORT: '0',
        FERRY_API_TOKENS: JSON.stringify([{ name: 'x', token: TOKEN, scopes: ['root'] }]),
      },
    });
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain('FERRY_API_TOKENS[0].scopes[0]');
  });

  it('serves with a sha256 token from a YAML file and stops cleanly on SIGTERM', async () => {
    const dir = await tempDir('ferry-api');
    const tokensFile = join(dir, 'tokens.yaml');
    const digest = createHash('sha256').update(TOKEN).digest('hex');
    await writeFile(tokensFile, `- name: ops\n  sha256: ${digest}\n  scopes: [admin]\n`);
    const api = spawnFerry(['api'], {
      env: {
        REDIS_URL: redis.url,
        FERRY_SERVICES: await servicesFile(),
        FERRY_PREFIX: uniquePrefix(),
        FERRY_API_TOKENS_FILE: tokensFile,
        PORT: '0',
        LOG_FORMAT: 'json',
      },
    });
    const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 20_000 });
    const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`, { headers })).status).toBe(200);
    const enqueued = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ service: 'svc', operation: 'op' }),
    });
    expect(enqueued.status).toBe(202);
    api.terminate();
    expect((await api.waitForExit(15_000)).code).toBe(0);
    expect(api.output()).not.toContain(TOKEN);
  });
});
