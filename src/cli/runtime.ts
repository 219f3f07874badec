/** Builds the long-running parts from the environment: the one place that wires modules together. */
import { clusterNodes, type Env, readEnv } from '../core/env.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { createRedisConnection, type RedisClient } from '../core/redis.ts';
import { loadServicesFile } from '../core/services/load.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import { createEnvSecretResolver } from '../secrets/env-provider.ts';
import { createWorkerPool, type WorkerPool } from '../worker/worker-pool.ts';

export interface Runtime {
  env: Env;
  logger: Logger;
  config: ServicesConfig;
}

export async function loadRuntime(options: { pretty?: boolean; name: string }): Promise<Runtime> {
  const env = readEnv();
  const logger = createLogger({
    level: env.LOG_LEVEL,
    pretty: env.LOG_FORMAT === undefined ? options.pretty === true : env.LOG_FORMAT === 'pretty',
    name: options.name,
  });
  const config = await loadServicesFile(env.FERRY_SERVICES);
  return { env, logger, config };
}

export function connect(env: Env, role: 'worker' | 'producer', name: string): RedisClient {
  const nodes = clusterNodes(env);
  return createRedisConnection(nodes === undefined ? { url: env.REDIS_URL } : { clusterNodes: nodes }, role, name);
}

export function startWorkers(runtime: Runtime, connection: RedisClient, services: readonly string[] | undefined): WorkerPool {
  const { env, logger, config } = runtime;
  return createWorkerPool({
    config,
    ...(services === undefined ? {} : { services }),
    connection,
    prefix: env.FERRY_PREFIX,
    secrets: createEnvSecretResolver(),
    logger,
    lockDurationMs: env.FERRY_LOCK_DURATION_MS,
    stalledIntervalMs: env.FERRY_STALLED_INTERVAL_MS,
    maxStalledCount: env.FERRY_MAX_STALLED_COUNT,
    sweepIntervalMs: env.FERRY_SWEEP_INTERVAL_MS,
  });
}
