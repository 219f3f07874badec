/**
 * Wires and starts the HTTP API: producer, route context, tokens, and the route modules. Shared by `ferry api`
 * and `ferry dev` (which mounts it next to its workers).
 */
import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';

import { buildApp } from '../api/app.ts';
import type { TokenSet } from '../api/auth.ts';
import { createAdminAuthorizer, DEFAULT_BULL_BOARD_PATH, registerBullBoard } from '../api/bull-board.ts';
import { createApiContext } from '../api/context.ts';
import { DEAD_LETTER_QUEUE } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import { DeadLetterReader } from '../dead-letter/reader.ts';
import { Producer } from '../producer/producer.ts';
import type { WorkerPool } from '../worker/worker-pool.ts';
import { createProcessMetrics, type Runtime } from './runtime.ts';

export interface RunningApi {
  app: FastifyInstance;
  /** `http://host:port` it listens on. */
  url: string;
  close(): Promise<void>;
}

export async function startApi(
  runtime: Runtime,
  options: {
    /** Producer-role connection (fails fast while Redis is down). */
    connection: RedisClient;
    tokens: TokenSet;
    /** The worker pool of this process (`ferry dev`): its deliveries and breakers then show in /metrics. */
    pool?: WorkerPool;
    host?: string;
    port?: number;
    /** When the port is taken, listen on a free one instead of failing (`ferry dev` with PORT unset). */
    fallbackToFreePort?: boolean;
  },
): Promise<RunningApi> {
  const { env, config, logger } = runtime;
  const { connection, tokens } = options;
  const prefix = env.FERRY_PREFIX;
  const producer = new Producer({ connection, prefix, services: config.services });
  const ctx = createApiContext({ config, producer, connection, prefix });
  const deadLetters = new DeadLetterReader({ connection, prefix });
  const metrics = createProcessMetrics(runtime, connection, {
    ...(options.pool === undefined ? {} : { pool: options.pool }),
    deadLetterCounts: deadLetters.deadLetterCounts,
  });
  // Bull Board's own handle on `{dead-letter}`: the service queues are the context's.
  const deadLetterQueue = new Queue(DEAD_LETTER_QUEUE, { connection, prefix });
  deadLetterQueue.on('error', () => undefined);
  const closeAll = async (app: FastifyInstance): Promise<void> => {
    await app.close();
    await metrics.close();
    await deadLetterQueue.close();
    await producer.close();
  };
  const app = await buildApp({
    ctx,
    tokens,
    logger,
    metrics,
    bodyLimitBytes: env.FERRY_API_BODY_LIMIT_BYTES,
    selfAuthenticatedPrefixes: [DEFAULT_BULL_BOARD_PATH],
    plugins: [
      (scope, routeContext) =>
        registerBullBoard(scope, {
          queues: [...[...config.services.keys()].map((name) => routeContext.queue(name)), deadLetterQueue],
          authorize: createAdminAuthorizer(tokens),
        }),
    ],
  });
  const host = options.host ?? env.HOST;
  const port = options.port ?? env.PORT;
  try {
    await listen(app, host, port, options.fallbackToFreePort === true);
  } catch (error) {
    await closeAll(app);
    throw error;
  }
  const address = app.server.address();
  const url =
    address !== null && typeof address === 'object'
      ? `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
      : `http://${host}:${port}`;
  return { app, url, close: () => closeAll(app) };
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
