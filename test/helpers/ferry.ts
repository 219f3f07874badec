import { Writable } from 'node:stream';

import { Redis } from 'ioredis';
import { onTestFinished } from 'vitest';

import { createLogger } from '../../src/core/logger.ts';
import { waitUntilReady } from '../../src/core/redis.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { ServicesConfig } from '../../src/core/services/types.ts';
import { Producer } from '../../src/producer/index.ts';
import { createEnvSecretResolver } from '../../src/secrets/env-provider.ts';
import type { SecretResolver } from '../../src/secrets/resolver.ts';
import { createWorkerPool, type WorkerPool, type WorkerPoolOptions } from '../../src/worker/worker-pool.ts';
import { type TestRedis, uniquePrefix } from './redis.ts';

export interface TestFerry {
  prefix: string;
  config: ServicesConfig;
  producer: Producer;
  pool: WorkerPool;
  /** Worker connection (maxRetriesPerRequest null), shared by the pool. */
  connection: Redis;
  /** Every JSON log line the worker wrote. */
  logs: string[];
  start(): Promise<void>;
}

export interface TestFerryOptions {
  /** The services file as an object (what YAML would parse to). */
  services: unknown;
  env?: NodeJS.ProcessEnv;
  secrets?: SecretResolver;
  pool?: Partial<Omit<WorkerPoolOptions, 'config' | 'connection' | 'prefix' | 'secrets' | 'logger'>>;
  /** Start the workers at once (default true). */
  start?: boolean;
  /** Redis key prefix; default a fresh one (a second Ferry on the same queues passes the first's). */
  prefix?: string;
  /** Changes the parsed services file before anything uses it (keys the schema does not read yet, test doubles). */
  transform?: (config: ServicesConfig) => ServicesConfig;
}

/**
 * A producer and a worker pool on a prefix unique to this test, closed when the test finishes. Worker
 * timings are shortened so stalls and sweeps happen within a test's time.
 */
export async function createTestFerry(redis: TestRedis, options: TestFerryOptions): Promise<TestFerry> {
  const prefix = options.prefix ?? uniquePrefix();
  const parsed = parseServicesConfig(options.services, { env: options.env ?? {} });
  const config = options.transform === undefined ? parsed : options.transform(parsed);
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
      callback();
    },
  });
  const logger = createLogger({ level: 'debug', destination });
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  const producerConnection = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  // As the CLI does at start-up: without an offline queue, a command sent before the connection is ready fails.
  await waitUntilReady(producerConnection);
  // The pool's keyring seals too: a sensitive operation's jobs are sealed by the producer.
  const keyring = options.pool?.keyring;
  const producer = new Producer({
    connection: producerConnection,
    prefix,
    services: config.services,
    ...(keyring === undefined ? {} : { keyring }),
  });
  const pool = createWorkerPool({
    config,
    connection,
    prefix,
    secrets: options.secrets ?? createEnvSecretResolver(options.env ?? {}),
    logger,
    lockDurationMs: 5_000,
    stalledIntervalMs: 1_000,
    sweepIntervalMs: 1_000,
    ...options.pool,
  });
  onTestFinished(async () => {
    await pool.close({ deadlineMs: 2_000 });
    await producer.close();
    connection.disconnect();
    producerConnection.disconnect();
  });
  const ferry: TestFerry = { prefix, config, producer, pool, connection, logs, start: () => pool.start() };
  if (options.start !== false) await ferry.start();
  return ferry;
}

/** A services-file object with one service `svc` at `baseUrl`; `overrides` are merged into the service. */
export function oneService(baseUrl: string, overrides: Record<string, unknown> = {}): unknown {
  return {
    services: {
      svc: {
        baseUrl,
        timeoutMs: 2_000,
        concurrency: 5,
        retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 } },
        operations: {
          create: { method: 'POST', path: '/things', body: '{{ input }}' },
          get: { method: 'GET', path: '/things/{{ input.id }}' },
        },
        ...overrides,
      },
    },
  };
}
