/**
 * A worker pool and the whole HTTP API over one Redis, wired as `ferry dev` wires them (one scrubber, the
 * secrets runtime, the pool, buildFerryApi), for end-to-end tests that search everything Ferry stored, logged
 * and answered. Everything is closed when the test finishes; the pool is not started, so a test can set
 * secrets first.
 */
import { Redis } from 'ioredis';
import { onTestFinished } from 'vitest';

import { TokenSet } from '../../src/api/auth.ts';
import { buildFerryApi } from '../../src/cli/api-server.ts';
import type { Runtime } from '../../src/cli/runtime.ts';
import { createSecretsRuntime, type SecretsRuntime } from '../../src/secrets/setup.ts';
import { createWorkerPool, type WorkerPool } from '../../src/worker/worker-pool.ts';
import type { TestRedis } from './redis.ts';

export interface FerryStack {
  pool: WorkerPool;
  secrets: SecretsRuntime;
  /** `http://127.0.0.1:<port>` of the API. */
  base: string;
  /** Every answer `call` got: `METHOD path status headers`, then the body. */
  answers: string[];
  /** One API call with the admin token; the parsed JSON answer, if any. */
  call(method: string, path: string, body?: unknown): Promise<unknown>;
}

export async function startFerryStack(
  redis: TestRedis,
  options: { runtime: Runtime; processEnv: Record<string, string>; adminToken: string },
): Promise<FerryStack> {
  const { runtime, processEnv, adminToken } = options;
  const prefix = runtime.env.FERRY_PREFIX;
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  const apiConnection = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  onTestFinished(() => {
    connection.disconnect();
    apiConnection.disconnect();
  });
  await new Promise((resolve) => apiConnection.once('ready', resolve));
  const secrets = await createSecretsRuntime({
    env: runtime.env,
    processEnv,
    connection,
    prefix,
    logger: runtime.logger,
  });
  onTestFinished(() => secrets.close());
  const pool = createWorkerPool({
    config: runtime.config,
    connection,
    prefix,
    secrets: secrets.resolver,
    scrubber: runtime.scrubber,
    logger: runtime.logger,
    lockDurationMs: 5_000,
    stalledIntervalMs: 1_000,
    sweepIntervalMs: 1_000,
  });
  onTestFinished(() => pool.close({ deadlineMs: 2_000 }));
  const api = await buildFerryApi(runtime, {
    connection: apiConnection,
    eventsConnection: connection,
    tokens: TokenSet.parse([{ name: 'admin', token: adminToken, scopes: ['admin'] }], 'ferry stack'),
    pool,
  });
  onTestFinished(() => api.close());
  await api.app.listen({ port: 0, host: '127.0.0.1' });
  const address = api.app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const base = `http://127.0.0.1:${address.port}`;
  const answers: string[] = [];
  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    const response = await fetch(base + path, {
      method,
      headers: {
        authorization: `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    answers.push(`${method} ${path} ${response.status} ${[...response.headers].join(' ')}\n${text}`);
    const isJson = response.headers.get('content-type')?.includes('json') === true;
    return isJson && text !== '' ? (JSON.parse(text) as unknown) : undefined;
  };
  return { pool, secrets, base, answers, call };
}
