/** Builds the long-running parts from the environment: the one place that wires modules together. */
import { readSharedState } from '../breakers/index.ts';
import { closedState, nextState } from '../breakers/state.ts';
import { clusterNodes, type Env, readEnv } from '../core/env.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { breakerKey } from '../core/queue-layout.ts';
import {
  type ConnectionRole,
  createRedisConnection,
  type RedisClient,
  waitUntilReady,
} from '../core/redis.ts';
import { loadServicesFile } from '../core/services/load.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import { type BreakerStateName, createMetrics, type Metrics } from '../metrics/metrics.ts';
import { Scrubber } from '../secrets/scrub.ts';
import { createSecretsRuntime, type SecretsRuntime } from '../secrets/setup.ts';
import { createWorkerPool, type WorkerPool } from '../worker/worker-pool.ts';
import { UsageError } from './output.ts';

export interface Runtime {
  env: Env;
  logger: Logger;
  config: ServicesConfig;
  /**
   * Every secret value and token this process has handed out, scrubbed from its log lines (after pino's
   * redact paths) and from everything the worker stores.
   */
  scrubber: Scrubber;
}

/**
 * The environment of a command that needs a Redis it does not start itself. Checked before the services file
 * is read: a missing REDIS_URL is the caller's mistake (exit 2), not to be hidden behind a later failure.
 */
export function readEnvWithRedis(): Env {
  const env = readEnv();
  if (env.REDIS_URL === undefined && env.REDIS_CLUSTER_NODES === undefined) {
    throw new UsageError(
      'REDIS_URL (or REDIS_CLUSTER_NODES) is not set; `ferry dev` starts a private Redis for local use',
    );
  }
  return env;
}

export async function loadRuntime(options: { pretty?: boolean; name: string; env?: Env }): Promise<Runtime> {
  const env = options.env ?? readEnv();
  const scrubber = new Scrubber();
  const logger = createLogger({
    scrub: (line) => scrubber.scrub(line),
    level: env.LOG_LEVEL,
    pretty: env.LOG_FORMAT === undefined ? options.pretty === true : env.LOG_FORMAT === 'pretty',
    bufferBytes: env.FERRY_LOG_BUFFER_BYTES,
    name: options.name,
  });
  const config = await loadServicesFile(env.FERRY_SERVICES);
  return { env, logger, config, scrubber };
}

export function connect(env: Env, role: ConnectionRole, name: string): RedisClient {
  const nodes = clusterNodes(env);
  return createRedisConnection(
    nodes === undefined ? { url: env.REDIS_URL } : { clusterNodes: nodes },
    role,
    name,
  );
}

/**
 * connect() + wait until Redis answers (waitUntilReady says why it did not). On failure the connection is
 * closed: ioredis would otherwise retry forever and the process would never exit.
 */
export async function connectReady(
  env: Env,
  role: ConnectionRole,
  name: string,
  timeoutMs = 30_000,
): Promise<RedisClient> {
  const connection = connect(env, role, name);
  try {
    await waitUntilReady(connection, timeoutMs);
  } catch (error) {
    connection.disconnect();
    throw error;
  }
  return connection;
}

/** The worker pool with its secret lookup (FERRY_SECRETS_*): close `secrets` after the pool. */
export async function startWorkers(
  runtime: Runtime,
  connection: RedisClient,
  services: readonly string[] | undefined,
): Promise<{ pool: WorkerPool; secrets: SecretsRuntime }> {
  const { env, logger, config } = runtime;
  const secrets = await createSecretsRuntime({ env, connection, prefix: env.FERRY_PREFIX, logger });
  const pool = createWorkerPool({
    config,
    ...(services === undefined ? {} : { services }),
    connection,
    prefix: env.FERRY_PREFIX,
    secrets: secrets.resolver,
    scrubber: runtime.scrubber,
    logger,
    lockDurationMs: env.FERRY_LOCK_DURATION_MS,
    stalledIntervalMs: env.FERRY_STALLED_INTERVAL_MS,
    maxStalledCount: env.FERRY_MAX_STALLED_COUNT,
    sweepIntervalMs: env.FERRY_SWEEP_INTERVAL_MS,
    deadLetterRetention: { maxAgeMs: env.FERRY_DLQ_MAX_AGE_MS, maxCount: env.FERRY_DLQ_MAX_COUNT },
  });
  return { pool, secrets };
}

export interface ProcessMetricsOptions {
  /** This process's worker pool: its deliveries are counted, and its breakers (as it sees them) reported. */
  pool?: WorkerPool;
  /** Dead letters per service (`ferry_dead_letters`); that metric is left out without it. */
  deadLetterCounts?: () => Promise<ReadonlyMap<string, number>>;
}

/**
 * The metrics of a Ferry process (`ferry worker`, `ferry api`, `ferry dev`): one registry for the whole
 * process. With a pool, the series cover the pool's services and breaker states come from its registry (no
 * Redis read); without one (the API), every service in the services file, breaker states read from Redis.
 * `close()` it when the process shuts down.
 */
export function createProcessMetrics(
  runtime: Runtime,
  connection: RedisClient,
  options: ProcessMetricsOptions = {},
): Metrics {
  const { env, config } = runtime;
  const { pool } = options;
  const services = pool?.services ?? [...config.services.keys()];
  const metrics = createMetrics({
    config,
    services,
    connection,
    prefix: env.FERRY_PREFIX,
    breakerStates:
      pool === undefined
        ? () => readBreakerStates(connection, env.FERRY_PREFIX, services)
        : () => Promise.resolve(new Map(pool.breakers.list().map(({ name, state }) => [name, state.state]))),
    ...(options.deadLetterCounts === undefined ? {} : { deadLetterCounts: options.deadLetterCounts }),
  });
  if (pool !== undefined) metrics.observeDeliveries(pool);
  return metrics;
}

/**
 * Each service's breaker state as every worker sees it: the shared record in Redis (src/breakers/shared-state.ts),
 * read with the breakers' own transition function, so it says what a worker would. One GET per service,
 * never MGET: the keys live in their services' Cluster slots.
 */
export async function readBreakerStates(
  redis: RedisClient,
  prefix: string,
  services: readonly string[],
  nowMs = Date.now(),
): Promise<Map<string, BreakerStateName>> {
  const states = await Promise.all(
    services.map(async (service) => {
      const observed = await readSharedState(redis, breakerKey(prefix, service));
      return nextState(closedState, { type: 'sharedObserved', record: observed?.record ?? null, nowMs })
        .state;
    }),
  );
  return new Map(services.map((service, i) => [service, states[i]!]));
}
