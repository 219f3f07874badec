/** Liveness, readiness and metrics. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import type { ApiContext } from '../context.ts';
import { UNAVAILABLE_RETRY_AFTER_SECONDS } from '../errors.ts';
import { jsonSchema } from '../schemas.ts';

/** A ping slower than this counts as Redis down: readiness must answer quickly to be useful. */
const READY_PING_TIMEOUT_MS = 1_000;

export interface MetricsSource {
  /** The Prometheus text exposition of every metric. */
  render(): Promise<{ contentType: string; body: string }>;
}

const readySchema = z.object({
  status: z.enum(['ready', 'unavailable']),
  redis: z.enum(['up', 'down']),
  services: z.number().int().describe('services loaded from the services file'),
});

async function pingWithin(ctx: ApiContext, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      ctx.connection.ping().then((answer) => answer === 'PONG'),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
    ]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

export function healthRoutes(
  app: FastifyInstance,
  ctx: ApiContext,
  metrics: MetricsSource | undefined,
): void {
  app.get(
    '/healthz',
    {
      config: { scope: 'public' },
      schema: {
        summary: 'The process is up (no token needed)',
        tags: ['health'],
        security: [],
        response: { 200: jsonSchema(z.object({ status: z.literal('ok') }), { validate: false }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      config: { scope: 'any' },
      schema: {
        summary: 'Ready to serve: Redis answers and the services file is loaded',
        tags: ['health'],
        response: {
          200: jsonSchema(readySchema, { validate: false }),
          503: jsonSchema(readySchema, { validate: false }),
        },
      },
    },
    async (_request, reply) => {
      const up = ctx.connection.status === 'ready' && (await pingWithin(ctx, READY_PING_TIMEOUT_MS));
      const services = ctx.config.services.size;
      const ready = up && services > 0;
      if (!ready) void reply.code(503).header('retry-after', String(UNAVAILABLE_RETRY_AFTER_SECONDS));
      return { status: ready ? 'ready' : 'unavailable', redis: up ? 'up' : 'down', services };
    },
  );

  if (metrics !== undefined) {
    app.get(
      '/metrics',
      {
        config: { scope: 'jobs:read' },
        schema: {
          summary: 'Prometheus metrics (text exposition format)',
          tags: ['health'],
          produces: ['text/plain'],
          response: { 200: { type: 'string', description: 'Prometheus text format 0.0.4' } },
        },
      },
      async (_request, reply) => {
        const { contentType, body } = await metrics.render();
        return reply.type(contentType).send(body);
      },
    );
  }
}
