/** Builds the long-running parts from the environment: the one place that wires modules together. */
import { readSharedState } from '../breakers/index.ts';
import { closedState, nextState } from '../breakers/state.ts';
import { clusterNodes, type Env, readEnv, sentinels } from '../core/env.ts';
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
import { createSecretsRuntime, requireSealKey, type SecretsRuntime } from '../secrets/setup.ts';
import { type ProxyEnv, readProxyEnv, redactProxyUrl } from '../worker/http/transport.ts';
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
  if (
    env.REDIS_URL === undefined &&
    env.REDIS_CLUSTER_NODES === undefined &&
    env.REDIS_SENTINELS === undefined
  ) {
    throw new UsageError(
      'REDIS_URL (or REDIS_CLUSTER_NODES or REDIS_SENTINELS) is not set; `ferry dev` starts a private Redis for local use',
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
  // Redis passwords are no secrets of a service, but no log line may carry one either.
  for (const password of redisPasswords(env)) scrubber.add(password);
  const config = await loadServicesFile(env.FERRY_SERVICES);
  return { env, logger, config, scrubber };
}

export function connect(env: Env, role: ConnectionRole, name: string): RedisClient {
  const nodes = clusterNodes(env);
  const sentinelNodes = sentinels(env);
  const password = env.REDIS_PASSWORD === undefined ? {} : { password: env.REDIS_PASSWORD };
  return createRedisConnection(
    sentinelNodes !== undefined
      ? {
          sentinels: sentinelNodes,
          sentinelName: env.REDIS_SENTINEL_NAME,
          ...(env.REDIS_SENTINEL_PASSWORD === undefined
            ? {}
            : { sentinelPassword: env.REDIS_SENTINEL_PASSWORD }),
          ...password,
        }
      : nodes === undefined
        ? { url: env.REDIS_URL, ...password }
        : { clusterNodes: nodes, ...password },
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

/** Why a command gave up on Redis at start-up (FERRY_REDIS_WAIT_MS): the message says what to do. */
export class RedisUnreachableError extends Error {
  override readonly name = 'RedisUnreachableError';
}

/**
 * Fail fast (FERRY_REDIS_WAIT_MS=0) gives up at the first failed connection attempt; this bounds the attempt
 * when nothing answers at all (a dropped SYN), under ioredis's own 10 s connect timeout.
 */
export const REDIS_FAIL_FAST_MS = 3_000;

/**
 * Where the process connects, for logs and error lines: `host:port` of REDIS_URL, the cluster seeds, or the
 * Sentinels and the master's name. Never the user name or a password.
 */
export function redisAddress(env: Env): string {
  const sentinelNodes = sentinels(env);
  if (sentinelNodes !== undefined) {
    const list = sentinelNodes.map(({ host, port }) =>
      host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    );
    return `master ${env.REDIS_SENTINEL_NAME} via sentinels ${list.join(',')}`;
  }
  const nodes = clusterNodes(env);
  if (nodes !== undefined) return nodes.join(',');
  if (env.REDIS_URL === undefined) return '(REDIS_URL unset)';
  try {
    const url = new URL(env.REDIS_URL);
    return `${url.hostname}:${url.port === '' ? '6379' : url.port}`;
  } catch {
    return '(REDIS_URL)';
  }
}

export interface RedisWaitOptions {
  /** How long to wait for Redis: 0 gives up at the first failed attempt, undefined never gives up. */
  waitMs: number | undefined;
  /**
   * Where the one "waiting for Redis" line goes. A one-shot command has none: it never waits, and its error
   * line does not offer FERRY_REDIS_WAIT_MS.
   */
  logger?: Logger;
  /** Aborting it (SIGTERM while waiting) rejects at once. */
  signal?: AbortSignal;
}

/**
 * connect() and wait until Redis answers, as FERRY_REDIS_WAIT_MS says: give up at the first failed attempt
 * (0), after that many ms, or never (ioredis reconnects with a backoff growing to 2 s). A wait logs once that
 * it is waiting, and where. Wrong credentials are not worth waiting for: they fail at once. On any failure the
 * connection is closed (ioredis would otherwise retry forever and hold the process open) and the error is a
 * RedisUnreachableError whose one-line message says what to do.
 */
export async function connectWhenReady(
  env: Env,
  role: ConnectionRole,
  name: string,
  options: RedisWaitOptions,
): Promise<RedisClient> {
  const connection = connect(env, role, name);
  try {
    await waitForRedis(connection, redisAddress(env), redisPasswords(env), redisSettings(env), options);
  } catch (error) {
    connection.disconnect();
    throw error;
  }
  return connection;
}

/** Every Redis password the environment holds (REDIS_URL's, REDIS_PASSWORD, REDIS_SENTINEL_PASSWORD). */
export function redisPasswords(env: Env): string[] {
  const passwords = [env.REDIS_PASSWORD, env.REDIS_SENTINEL_PASSWORD];
  try {
    if (env.REDIS_URL !== undefined) passwords.push(decodeURIComponent(new URL(env.REDIS_URL).password));
  } catch {
    // Not a URL (readEnv has checked it is one): nothing to cut out.
  }
  return passwords
    .filter((password): password is string => password !== undefined && password !== '')
    .sort((a, b) => b.length - a.length);
}

/** The variables that say where Redis is, and hold its credentials: what an error line tells the user to fix. */
function redisSettings(env: Env): { where: string; credentials: string } {
  if (env.REDIS_SENTINELS !== undefined) {
    return {
      where: 'REDIS_SENTINELS and REDIS_SENTINEL_NAME',
      credentials: 'REDIS_PASSWORD (the master) and REDIS_SENTINEL_PASSWORD (the Sentinels)',
    };
  }
  if (env.REDIS_CLUSTER_NODES !== undefined) {
    return { where: 'REDIS_CLUSTER_NODES', credentials: 'REDIS_PASSWORD' };
  }
  return { where: 'REDIS_URL', credentials: 'the user name and password in REDIS_URL (or REDIS_PASSWORD)' };
}

/** Redis's answers to a wrong user name or password (ACL or requirepass). */
const CREDENTIALS_ERROR = /(^|Last error: )(WRONGPASS|NOAUTH|ERR invalid password)/;

function waitForRedis(
  client: RedisClient,
  where: string,
  passwords: readonly string[],
  settings: { where: string; credentials: string },
  { waitMs, logger, signal }: RedisWaitOptions,
): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  // An error message is Redis's or the socket's; passwords are cut out all the same, in case one echoes them.
  const describe = (error: Error | undefined): string => {
    if (error === undefined) return '';
    let message = error.message;
    for (const password of passwords) message = message.replaceAll(password, '***');
    return ` (${message.replaceAll(/\s+/g, ' ')})`;
  };
  const whatToDo =
    logger === undefined
      ? `start it or fix ${settings.where}`
      : `start it or fix ${settings.where}, or set FERRY_REDIS_WAIT_MS to wait for it`;
  return new Promise<void>((resolve, reject) => {
    let lastError: Error | undefined;
    let logged = false;
    const limitMs = waitMs === 0 ? REDIS_FAIL_FAST_MS : waitMs;
    const timer =
      limitMs === undefined
        ? undefined
        : setTimeout(
            () =>
              fail(
                waitMs === 0
                  ? `Redis at ${where} did not answer${describe(lastError)}: ${whatToDo}`
                  : `Redis at ${where} was not ready within ${limitMs} ms${describe(lastError)}: start it or fix ${settings.where}, or raise FERRY_REDIS_WAIT_MS`,
              ),
            limitMs,
          );
    const fail = (message: string): void => {
      cleanup();
      reject(new RedisUnreachableError(message));
    };
    const onReady = (): void => {
      cleanup();
      if (logged) logger?.info({ redis: where }, `Redis at ${where} is ready`);
      resolve();
    };
    // Through Sentinels, ioredis's error says only that none gave a master; each Sentinel's own error (an
    // unknown master name, a refused password) comes first, as a sentinelError.
    let lastSentinelError: Error | undefined;
    const onSentinelError = (error: Error): void => {
      lastSentinelError = error;
    };
    const onError = (incoming: Error): void => {
      const error =
        lastSentinelError !== undefined &&
        incoming.message.startsWith('All sentinels are unreachable') &&
        !incoming.message.includes('Last error:')
          ? new Error(`${incoming.message} Last error: ${lastSentinelError.message}`)
          : incoming;
      lastError = error;
      if (CREDENTIALS_ERROR.test(error.message)) {
        fail(`Redis at ${where} refused the credentials${describe(error)}: fix ${settings.credentials}`);
      } else if (waitMs === 0) {
        fail(`Redis at ${where} is unreachable${describe(error)}: ${whatToDo}`);
      } else if (!logged) {
        logged = true;
        logger?.warn(
          { redis: where, waitMs: waitMs ?? null, error: describe(error).slice(2, -1) },
          `waiting for Redis at ${where}${describe(error)}; retrying ${waitMs === undefined ? 'until it answers' : `for up to ${waitMs} ms`} (FERRY_REDIS_WAIT_MS)`,
        );
      }
    };
    const onAbort = (): void => fail(`stopped while waiting for Redis at ${where}`);
    const cleanup = (): void => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('error', onError);
      client.off('sentinelError', onSentinelError);
      signal?.removeEventListener('abort', onAbort);
    };
    client.on('ready', onReady);
    client.on('error', onError);
    client.on('sentinelError', onSentinelError);
    if (signal?.aborted === true) onAbort();
    else signal?.addEventListener('abort', onAbort);
  });
}

/** The worker pool with its secret lookup (FERRY_SECRETS_*): close `secrets` after the pool. */
export async function startWorkers(
  runtime: Runtime,
  connection: RedisClient,
  services: readonly string[] | undefined,
): Promise<{ pool: WorkerPool; secrets: SecretsRuntime }> {
  const { env, logger, config } = runtime;
  const secrets = await createSecretsRuntime({ env, connection, prefix: env.FERRY_PREFIX, logger });
  let proxyEnv: ProxyEnv;
  try {
    requireSealKey(config, secrets.keyring, services);
    // HTTPS_PROXY / HTTP_PROXY / NO_PROXY (issue 17), read once; their credentials are scrubbed like secrets.
    proxyEnv = readProxyEnv(process.env);
  } catch (error) {
    secrets.close();
    throw error;
  }
  if (proxyEnv.httpProxy !== undefined || proxyEnv.httpsProxy !== undefined) {
    logger.info(
      {
        httpProxy: proxyEnv.httpProxy === undefined ? undefined : redactProxyUrl(proxyEnv.httpProxy),
        httpsProxy: proxyEnv.httpsProxy === undefined ? undefined : redactProxyUrl(proxyEnv.httpsProxy),
        noProxy: proxyEnv.noProxyAll ? '*' : proxyEnv.noProxy.length,
      },
      'downstream calls go through a forward proxy',
    );
  }
  const pool = createWorkerPool({
    proxyEnv,
    config,
    ...(services === undefined ? {} : { services }),
    connection,
    prefix: env.FERRY_PREFIX,
    secrets: secrets.resolver,
    keyring: secrets.keyring,
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
    topTenants: env.FERRY_METRICS_TOP_TENANTS,
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
