/** Liveness, readiness and metrics. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import type { ApiContext } from '../context.ts';
import { redisRefusal, UNAVAILABLE_RETRY_AFTER_SECONDS } from '../errors.ts';
import { jsonSchema } from '../schemas.ts';

/** A probe slower than this counts as Redis down: readiness must answer quickly to be useful. */
const READY_PROBE_TIMEOUT_MS = 1_000;
/** The probe key's lifetime: it is overwritten by every probe and gone this long after the last one. */
const READY_PROBE_TTL_MS = 60_000;

export interface MetricsSource {
  /** The Prometheus text exposition of every metric. */
  render(): Promise<{ contentType: string; body: string }>;
}

const readySchema = z.object({
  status: z.enum(['ready', 'unavailable']),
  redis: z
    .enum(['up', 'down', 'refusingWrites'])
    .optional()
    .describe(
      'Only with a valid token. refusingWrites: Redis answers but refuses writes (out of memory, read-only replica…)',
    ),
  services: z
    .number()
    .int()
    .optional()
    .describe('Only with a valid token: services loaded from the services file'),
});

type RedisHealth = 'up' | 'down' | 'refusingWrites';

/**
 * One small write, bounded in time: what an enqueue needs is that Redis accepts writes, which a PING does not
 * show (an out-of-memory `noeviction` Redis or a read-only replica answers PONG and refuses every enqueue).
 * A write probe asks Redis itself, for every reason it may refuse, where an INFO-based guess (used_memory
 * against maxmemory, role, last bgsave status) would restate Redis's rules and miss some. It costs one SET of
 * one key with a TTL per readiness check; with Redis Cluster it probes the key's shard.
 */
async function probeOnce(ctx: ApiContext, ms: number): Promise<RedisHealth> {
  let timer: NodeJS.Timeout | undefined;
  const key = `${ctx.prefix}:ferry:ready-probe`;
  try {
    return await Promise.race([
      ctx.connection
        .set(key, String(Date.now()), 'PX', READY_PROBE_TTL_MS)
        .then((answer): RedisHealth => (answer === 'OK' ? 'up' : 'down')),
      new Promise<RedisHealth>((resolve) => {
        timer = setTimeout(() => resolve('down'), ms);
      }),
    ]);
  } catch (error) {
    return redisRefusal(error) === undefined ? 'down' : 'refusingWrites';
  } finally {
    clearTimeout(timer);
  }
}

export function healthRoutes(
  app: FastifyInstance,
  ctx: ApiContext,
  metrics: MetricsSource | undefined,
): void {
  // /readyz needs no token: however many probes arrive at once, one write is under way at a time.
  let probing: Promise<RedisHealth> | undefined;
  const probe = (): Promise<RedisHealth> => {
    probing ??= probeOnce(ctx, READY_PROBE_TIMEOUT_MS).finally(() => {
      probing = undefined;
    });
    return probing;
  };

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
      config: { scope: 'public' },
      schema: {
        summary: 'Ready to serve: Redis accepts a write and the services file is loaded (no token needed)',
        description:
          'Without a token (load balancers, Kubernetes probes) the answer is only `status`; with a valid bearer ' +
          'token it also says why (`redis`, `services`). A missing or unknown token is never refused here.',
        tags: ['health'],
        security: [{}, { bearer: [] }],
        response: {
          200: jsonSchema(readySchema, { validate: false }),
          503: jsonSchema(readySchema, { validate: false }),
        },
      },
    },
    async (request, reply) => {
      const redis: RedisHealth = ctx.connection.status === 'ready' ? await probe() : 'down';
      const services = ctx.config.services.size;
      const ready = redis === 'up' && services > 0;
      if (!ready) void reply.code(503).header('retry-after', String(UNAVAILABLE_RETRY_AFTER_SECONDS));
      const status = ready ? ('ready' as const) : ('unavailable' as const);
      return request.principal === undefined ? { status } : { status, redis, services };
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
