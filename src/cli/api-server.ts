/**
 * Wires and starts the HTTP API: producer, route context, tokens, and the route modules. Shared by `ferry api`
 * and `ferry dev` (which mounts it next to its workers).
 */
import type { FastifyInstance } from 'fastify';

import { buildApp } from '../api/app.ts';
import type { TokenSet } from '../api/auth.ts';
import { createApiContext } from '../api/context.ts';
import type { MetricsSource } from '../api/routes/health.ts';
import type { RedisClient } from '../core/redis.ts';
import { Producer } from '../producer/producer.ts';
import type { Runtime } from './runtime.ts';

export interface RunningApi {
  app: FastifyInstance;
  /** `http://host:port` it listens on. */
  url: string;
  close(): Promise<void>;
}

export async function startApi(
  runtime: Runtime,
  options: {
    connection: RedisClient;
    tokens: TokenSet;
    metrics?: MetricsSource;
    host?: string;
    port?: number;
    /** When the port is taken, listen on a free one instead of failing (`ferry dev` with PORT unset). */
    fallbackToFreePort?: boolean;
  },
): Promise<RunningApi> {
  const { env, config, logger } = runtime;
  const producer = new Producer({
    connection: options.connection,
    prefix: env.FERRY_PREFIX,
    services: config.services,
  });
  const ctx = createApiContext({
    config,
    producer,
    connection: options.connection,
    prefix: env.FERRY_PREFIX,
  });
  const app = await buildApp({
    ctx,
    tokens: options.tokens,
    logger,
    bodyLimitBytes: env.FERRY_API_BODY_LIMIT_BYTES,
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
  });
  const host = options.host ?? env.HOST;
  const port = options.port ?? env.PORT;
  try {
    await listen(app, host, port, options.fallbackToFreePort === true);
  } catch (error) {
    await app.close();
    await producer.close();
    throw error;
  }
  const address = app.server.address();
  const url =
    address !== null && typeof address === 'object'
      ? `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
      : `http://${host}:${port}`;
  return {
    app,
    url,
    async close() {
      await app.close();
      await producer.close();
    },
  };
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
