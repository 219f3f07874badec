/** Builds the long-running parts from the environment: the one place that wires modules together. */
import { clusterNodes, type Env, readEnv } from '../core/env.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { createRedisConnection, type RedisClient, waitUntilReady } from '../core/redis.ts';
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
    bufferBytes: env.FERRY_LOG_BUFFER_BYTES,
    name: options.name,
  });
  const config = await loadServicesFile(env.FERRY_SERVICES);
  return { env, logger, config };
}

export function connect(env: Env, role: 'worker' | 'producer', name: string): RedisClient {
  const nodes = clusterNodes(env);
  return createRedisConnection(
    nodes === undefined ? { url: env.REDIS_URL } : { clusterNodes: nodes },
    role,
    name,
  );
}

/**
 * connect() + wait until Redis answers. On failure the connection is closed (ioredis would otherwise retry
 * forever and the process would never exit) and the error says why; while waiting, connection errors are
 * collected instead of printed by ioredis as "Unhandled error event" stack traces.
 */
export async function connectReady(
  env: Env,
  role: 'worker' | 'producer',
  name: string,
  timeoutMs = 30_000,
): Promise<RedisClient> {
  const connection = connect(env, role, name);
  let lastError: Error | undefined;
  const onError = (error: Error): void => {
    lastError = error;
  };
  connection.on('error', onError);
  try {
    await waitUntilReady(connection, timeoutMs);
  } catch {
    connection.disconnect();
    throw new Error(
      `Redis was not ready within ${timeoutMs} ms${lastError === undefined ? '' : ` (${lastError.message})`}`,
    );
  } finally {
    connection.off('error', onError);
  }
  return connection;
}

export function startWorkers(
  runtime: Runtime,
  connection: RedisClient,
  services: readonly string[] | undefined,
): WorkerPool {
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
