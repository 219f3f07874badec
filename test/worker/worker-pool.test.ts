/** The worker pool's own rules: which services it accepts, its defaults, and the clock its shutdown reads. */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { readEnv } from '../../src/core/env.ts';
import { ConfigurationError } from '../../src/core/errors.ts';
import { createLogger } from '../../src/core/logger.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { HOUR } from '../../src/core/time.ts';
import { createEnvSecretResolver } from '../../src/secrets/env-provider.ts';
import { createWorkerPool, WORKER_POOL_DEFAULTS } from '../../src/worker/worker-pool.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { withTimeout } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

describe('createWorkerPool', () => {
  it('refuses a service the services file does not name with a ConfigurationError', () => {
    // Never connected: the pool refuses before it touches Redis.
    const connection = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: null });
    try {
      const create = () =>
        createWorkerPool({
          config: parseServicesConfig(oneService('http://127.0.0.1:9'), { env: {} }),
          services: ['svc', 'nope'],
          connection,
          prefix: uniquePrefix(),
          secrets: createEnvSecretResolver({}),
          logger: createLogger({ level: 'silent' }),
        });
      expect(create).toThrow(ConfigurationError);
      expect(create).toThrow(/unknown service "nope" \(not in the services file\)/);
      expect(() => create()).toThrow(
        expect.objectContaining({ type: 'ConfigurationError', field: 'services' }),
      );
      expect(connection.status).toBe('wait');
    } finally {
      connection.disconnect();
    }
  });

  it("states the defaults the environment's variables default to", () => {
    const env = readEnv({});
    expect({
      lockDurationMs: env.FERRY_LOCK_DURATION_MS,
      stalledIntervalMs: env.FERRY_STALLED_INTERVAL_MS,
      maxStalledCount: env.FERRY_MAX_STALLED_COUNT,
      sweepIntervalMs: env.FERRY_SWEEP_INTERVAL_MS,
      shutdownGraceMs: env.FERRY_SHUTDOWN_TIMEOUT_MS,
      shutdownHandbackMs: env.FERRY_SHUTDOWN_HANDBACK_MS,
    }).toEqual({
      lockDurationMs: WORKER_POOL_DEFAULTS.lockDurationMs,
      stalledIntervalMs: WORKER_POOL_DEFAULTS.stalledIntervalMs,
      maxStalledCount: WORKER_POOL_DEFAULTS.maxStalledCount,
      sweepIntervalMs: WORKER_POOL_DEFAULTS.sweepIntervalMs,
      shutdownGraceMs: WORKER_POOL_DEFAULTS.shutdownGraceMs,
      shutdownHandbackMs: WORKER_POOL_DEFAULTS.shutdownHandbackMs,
    });
    expect(Object.isFrozen(WORKER_POOL_DEFAULTS)).toBe(true);
  });

  it('measures the shutdown grace and hand-back on its own clock', { timeout: 30_000 }, async () => {
    // A call far longer than the test, and a grace and hand-back of a minute each: only the pool's clock saying
    // that an hour passed once the shutdown began can end both early.
    const downstream = await startDownstream(() => ({ status: 200, delayMs: 20_000 }));
    let skewMs = 0;
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, { timeoutMs: 30_000 }),
      pool: { clock: { now: () => Date.now() + skewMs } },
    });
    const { id } = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    await expect.poll(() => downstream.requests.length, { timeout: 10_000 }).toBe(1);
    const shutdown = ferry.pool.shutdown({ deadlineMs: 60_000, handbackMs: 60_000 });
    skewMs = HOUR;
    const report = await withTimeout(shutdown, 20_000, () => 'pool.shutdown() waited on the system clock');
    // The hand-back had no time left on that clock either: the aborted run could not be waited for.
    expect(report).toEqual({ unrecorded: [{ service: 'svc', jobId: id }], redisReachable: true });
    expect(ferry.logs.some((line) => line.includes('shutdown deadline passed'))).toBe(true);
  });

  it('logs no worker error while no job is due (a delayed job waiting)', async () => {
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const { id } = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: {},
      delayMs: 500,
    });
    const view = await ferry.producer.waitFor('svc', id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    expect(ferry.logs.filter((line) => line.includes('"msg":"worker error"'))).toEqual([]);
  });
});
