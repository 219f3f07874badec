/**
 * Wires and starts the HTTP API: producer, route context, tokens, and the route modules. Shared by `ferry api`
 * and `ferry dev` (which mounts it next to its workers).
 */
import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { Cluster } from 'ioredis';

import { buildApp } from '../api/app.ts';
import { principalOf, serviceReadAccess, type TokenSet } from '../api/auth.ts';
import { createAdminAuthorizer, DEFAULT_BULL_BOARD_PATH, registerBullBoard } from '../api/bull-board.ts';
import { createApiContext } from '../api/context.ts';
import { CHANNEL_CLOSE_WAIT_MS } from '../api/job-events/channel.ts';
import { createJobEventHub } from '../api/job-events/hub.ts';
import { jobEventsRoutes } from '../api/job-events/routes.ts';
import type { SseOptions } from '../api/sse.ts';
import { Deadline, settleWithin } from '../core/deadline.ts';
import type { Env } from '../core/env.ts';
import { DEAD_LETTER_QUEUE } from '../core/queue-layout.ts';
import { API_COMMAND_TIMEOUT_MS, type RedisClient } from '../core/redis.ts';
import { DeadLetterReader } from '../dead-letter/reader.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { testStagedSecret } from '../ops/secret-test.ts';
import { Producer } from '../producer/producer.ts';
import { SecretStore } from '../secrets/redis-store.ts';
import { createSecretsRuntime, loadKeyring, requireSealKey } from '../secrets/setup.ts';
import { createSecretProbe } from '../worker/secret-probe.ts';
import type { WorkerPool } from '../worker/worker-pool.ts';
import { type MetricsServer, redisReadiness, startMetricsServer } from './metrics-server.ts';
import { createProcessMetrics, type Runtime } from './runtime.ts';

/**
 * The most the API's close() waits, in all, for requests, job event streams and connections (then it cuts
 * what is left): SIGTERM exits within seconds even when Redis is gone or paused.
 */
export const API_CLOSE_WAIT_MS = 4_000;
/** What a step gets when the shared wait is used up: enough to cut connections, never to wait for Redis. */
const FORCE_WAIT_MS = 250;

export interface RunningApi {
  app: FastifyInstance;
  /** `http://host:port` it listens on. */
  url: string;
  /** `http://host:port` of the metrics server without a token, when one was asked for (`metricsListener`). */
  metricsUrl?: string;
  close(): Promise<void>;
}

/**
 * Where `ferry api` / `ferry dev` open a metrics server without a token: only when FERRY_METRICS_PORT is set
 * (and not 0). The API port already serves /metrics with a token, and a worker on the same host listens on
 * the default 9464: an API opening it by default would take the worker's port.
 */
export function apiMetricsListener(
  env: Env,
  processEnv: NodeJS.ProcessEnv = process.env,
): { host: string; port: number } | undefined {
  const set = processEnv.FERRY_METRICS_PORT !== undefined && processEnv.FERRY_METRICS_PORT.trim() !== '';
  return set && env.FERRY_METRICS_PORT !== 0
    ? { host: env.FERRY_METRICS_HOST, port: env.FERRY_METRICS_PORT }
    : undefined;
}

/**
 * The connection the API's enqueues go on. With FERRY_ENQUEUE_MIN_REPLICAS a connection of their own: WAIT
 * counts the writes of the connection it is sent on, and blocks that connection until the replicas answer
 * (up to FERRY_ENQUEUE_REPLICA_TIMEOUT_MS), which must hold up neither /readyz nor the other routes. Its
 * command timeout leaves WAIT its whole timeout.
 */
function enqueueConnection(connection: RedisClient, env: Env): RedisClient {
  if (env.FERRY_ENQUEUE_MIN_REPLICAS === 0) return connection;
  const commandTimeout = env.FERRY_ENQUEUE_REPLICA_TIMEOUT_MS + API_COMMAND_TIMEOUT_MS;
  const name = 'ferry-api-enqueue';
  const copy =
    connection instanceof Cluster
      ? connection.duplicate(undefined, {
          redisOptions: { ...connection.options.redisOptions, commandTimeout, connectionName: name },
        })
      : connection.duplicate({ commandTimeout, connectionName: name });
  // Connection errors reach the enqueue as rejected calls (503); without a listener ioredis prints each one.
  copy.on('error', () => undefined);
  return copy;
}

export interface FerryApiOptions {
  /** Producer-role connection (fails fast while Redis is down). */
  connection: RedisClient;
  /**
   * Worker-role connection (`maxRetriesPerRequest: null`) that job event streams copy: one blocking connection
   * per service with subscribers.
   */
  eventsConnection: RedisClient;
  tokens: TokenSet;
  /** The worker pool of this process (`ferry dev`): its deliveries and breakers then show in /metrics. */
  pool?: WorkerPool;
  /** Server-Sent Events settings (tests shorten the heartbeat). */
  sse?: SseOptions;
  /** Where FERRY_SECRET_<NAME> values are read for the secrets routes (default process.env). */
  processEnv?: NodeJS.ProcessEnv;
}

/** The whole API, built and not listening: routes, job events, dead letters, Bull Board, metrics. */
export async function buildFerryApi(
  runtime: Runtime,
  options: FerryApiOptions,
): Promise<{ app: FastifyInstance; metrics: Metrics; close(): Promise<void> }> {
  const { env, config, logger } = runtime;
  const { connection, tokens } = options;
  const prefix = env.FERRY_PREFIX;
  // Sensitive operations' jobs are sealed by the producer: with one in the file, no key means no start.
  const keyring = await loadKeyring(env);
  requireSealKey(config, keyring);
  const producerConnection = enqueueConnection(connection, env);
  const producer = new Producer({
    ...(keyring === undefined ? {} : { keyring }),
    connection: producerConnection,
    prefix,
    services: config.services,
    maxMetadataBytes: env.FERRY_MAX_METADATA_BYTES,
    minReplicas: env.FERRY_ENQUEUE_MIN_REPLICAS,
    replicaTimeoutMs: env.FERRY_ENQUEUE_REPLICA_TIMEOUT_MS,
  });
  // No cache (FERRY_SECRETS_CACHE_MS 0) and no watch: the API resolves values only for a rare secrets test,
  // which must see a change made a moment ago, and a cache nothing clears would not.
  const secrets = await createSecretsRuntime({
    env: { ...env, FERRY_SECRETS_CACHE_MS: 0 },
    ...(options.processEnv === undefined ? {} : { processEnv: options.processEnv }),
    connection,
    prefix,
    logger,
    watch: false,
  });
  const ctx = createApiContext({
    config,
    producer,
    connection,
    prefix,
    keyring,
    secrets: {
      // Without a master key the store still lists, promotes, rolls back and deletes (it opens no value).
      store: secrets.store ?? new SecretStore({ connection, prefix, keyring: undefined }),
      sources: secrets.sources,
      resolver: secrets.resolver,
      testStaged: (request) =>
        testStagedSecret({ config, resolver: secrets.resolver, probe: createSecretProbe(), ...request }),
      scrubber: runtime.scrubber,
    },
  });
  const deadLetters = new DeadLetterReader({ connection, prefix });
  const metrics = createProcessMetrics(runtime, connection, {
    ...(options.pool === undefined ? {} : { pool: options.pool }),
    deadLetterCounts: deadLetters.deadLetterCounts,
  });
  const hub = createJobEventHub({ connection, eventsConnection: options.eventsConnection, prefix, logger });
  // Bull Board's own handle on `{dead-letter}`: the service queues are the context's.
  const deadLetterQueue = new Queue(DEAD_LETTER_QUEUE, { connection, prefix });
  deadLetterQueue.on('error', () => undefined);
  const app = await buildApp({
    ctx,
    tokens,
    logger,
    metrics,
    bodyLimitBytes: env.FERRY_API_BODY_LIMIT_BYTES,
    maxJsonDepth: env.FERRY_API_MAX_JSON_DEPTH,
    requestTimeoutMs: env.FERRY_API_REQUEST_TIMEOUT_MS,
    selfAuthenticatedPrefixes: [DEFAULT_BULL_BOARD_PATH],
    plugins: [
      (scope, routeContext) =>
        jobEventsRoutes(scope, {
          hub,
          producer: routeContext.producer,
          services: config.services,
          authorize: (request, { service }) => serviceReadAccess(principalOf(request), service),
          ...(options.sse === undefined ? {} : { sse: options.sse }),
        }),
      (scope, routeContext) =>
        registerBullBoard(scope, {
          queues: [...[...config.services.keys()].map((name) => routeContext.queue(name)), deadLetterQueue],
          authorize: createAdminAuthorizer(tokens),
          isRedisReady: () => connection.status === 'ready',
        }),
    ],
  });
  let closing: Promise<void> | undefined;
  return {
    app,
    metrics,
    close() {
      // Bounded whatever Redis does (down, SIGKILLed, SIGSTOPped): each step waits at most for what is left.
      closing ??= (async () => {
        const deadline = new Deadline(API_CLOSE_WAIT_MS);
        // Requests still waiting on Redis are cut: their clients retry (503 semantics), the process must go.
        if ((await settleWithin(app.close(), deadline.left(FORCE_WAIT_MS))) === 'timeout')
          app.server.closeAllConnections();
        await hub.close(Math.min(CHANNEL_CLOSE_WAIT_MS, deadline.left(FORCE_WAIT_MS)));
        await settleWithin(
          Promise.all([metrics.close(), deadLetterQueue.close(), producer.close()]),
          deadline.left(FORCE_WAIT_MS),
        );
        if (producerConnection !== connection) producerConnection.disconnect();
        secrets.close();
      })();
      return closing;
    },
  };
}

export async function startApi(
  runtime: Runtime,
  options: FerryApiOptions & {
    host?: string;
    port?: number;
    /** When the port is taken, listen on a free one instead of failing (`ferry dev` with PORT unset). */
    fallbackToFreePort?: boolean;
    /**
     * Also serve /metrics, /healthz and /readyz without a token on this address (see apiMetricsListener). A
     * port in use fails start-up like the API's own.
     */
    metricsListener?: { host: string; port: number } | undefined;
  },
): Promise<RunningApi> {
  const { env } = runtime;
  const { app, metrics, close: closeApi } = await buildFerryApi(runtime, options);
  const host = options.host ?? env.HOST;
  const port = options.port ?? env.PORT;
  let metricsServer: MetricsServer | undefined;
  const close = async (): Promise<void> => {
    await metricsServer?.close();
    await closeApi();
  };
  try {
    await listen(app, host, port, options.fallbackToFreePort === true);
    if (options.metricsListener !== undefined) {
      metricsServer = await startMetricsServer({
        ...options.metricsListener,
        metrics,
        ready: redisReadiness(options.connection),
        owner: "API's",
        logger: runtime.logger,
      });
    }
  } catch (error) {
    await close();
    throw error;
  }
  const address = app.server.address();
  const url =
    address !== null && typeof address === 'object'
      ? `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
      : `http://${host}:${port}`;
  return { app, url, ...(metricsServer === undefined ? {} : { metricsUrl: metricsServer.url }), close };
}

async function listen(app: FastifyInstance, host: string, port: number, fallback: boolean): Promise<void> {
  try {
    await app.listen({ host, port });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    if (!fallback) throw new Error(`cannot listen on ${host}:${port}: the port is in use (set PORT)`);
    await app.listen({ host, port: 0 });
  }
}
