/**
 * Dead letters in bulk (issue 5, DESIGN §4): `POST /v1/dead-letters/replay` and `POST /v1/dead-letters/purge`,
 * with the list's filters, over the same operator actions as `ferry dlq replay|purge`
 * (src/ops/dead-letter-replay.ts, dead-letter-purge.ts).
 *
 * Replay answers its report as JSON, or, for `Accept: text/event-stream`, streams `progress` events and ends
 * with `done` (the report). A client that goes away stops the replay between dead letters (those in flight
 * finish); running it again continues, and the engine guarantees that no dead letter is replayed twice. The
 * `done` event's id is `end`: an EventSource that reconnects with it gets 204, which tells it to stop, instead
 * of starting the replay again; one that reconnects with a `progress` id (the connection dropped) continues.
 *
 * Both need `admin`: a replay deletes the dead letters it replays (DELETE of one dead letter is admin) and can
 * send thousands of calls to a service at once; a purge deletes them for good. A token limited to services or
 * tenants acts only within them (the engine is given the scope).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { ValidationError } from '../../core/errors.ts';
import type { DeadLetterFilter, DeadLetterScope } from '../../dead-letter/list-query.ts';
import { purgeDeadLetters } from '../../ops/dead-letter-purge.ts';
import {
  replayDeadLetters,
  replayDeps,
  type ReplayProgress,
  type ReplayReport,
} from '../../ops/dead-letter-replay.ts';
import { type Principal, principalOf, requireService } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { toErrorResponse } from '../errors.ts';
import { errorResponses, jsonSchema, type ZodTypeProvider } from '../schemas.ts';
import { SseStream } from '../sse.ts';
import {
  filterFields,
  progressEvent,
  purgeBodySchema,
  purgeReportSchema,
  replayBodySchema,
  replayReportSchema,
} from './dead-letter-bulk-schemas.ts';

/** Progress events at most this often (and the last one before `done`): 10,000 dead letters are not 10,000 events. */
export const PROGRESS_INTERVAL_MS = 250;
/** The `done` event's id; a reconnect with it is answered 204 (see the module comment). */
const END_ID = 'end';

function scopeOf(principal: Principal): DeadLetterScope | undefined {
  if (principal.services === undefined && principal.tenants === undefined) return undefined;
  return {
    ...(principal.services === undefined ? {} : { services: [...principal.services] }),
    ...(principal.tenants === undefined ? {} : { tenants: [...principal.tenants] }),
  };
}

function filterOf(body: DeadLetterFilter): DeadLetterFilter {
  const filter: DeadLetterFilter = {};
  for (const key of Object.keys(filterFields) as (keyof DeadLetterFilter)[]) {
    if (body[key] !== undefined) Object.assign(filter, { [key]: body[key] });
  }
  return filter;
}

function wantsEventStream(request: FastifyRequest): boolean {
  return request.headers.accept?.includes('text/event-stream') === true;
}

/**
 * Aborts when the client goes away before the answer was sent (a JSON answer's socket closing, or an event
 * stream's), so a long run does not go on for nobody.
 */
function abortOnDisconnect(reply: FastifyReply, controller: AbortController): void {
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
}

export function deadLetterBulkRoutes(fastify: FastifyInstance, ctx: ApiContext): void {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const running = new Set<AbortController>();
  // Fastify's close waits for every response: stop running replays and purges (they answer `interrupted`).
  app.addHook('preClose', async () => {
    for (const controller of running) controller.abort();
  });

  const target = replayDeps({ connection: ctx.connection, prefix: ctx.prefix, config: ctx.config });

  function checkService(principal: Principal, service: string | undefined, known: boolean): void {
    if (service === undefined) return;
    if (known && !ctx.config.services.has(service)) {
      throw new ValidationError(`service: unknown service "${service}" (not in the services file)`, {
        field: 'service',
        status: 422,
      });
    }
    requireService(principal, service);
  }

  app.post(
    '/v1/dead-letters/replay',
    {
      config: { scope: 'admin', redis: true },
      schema: {
        summary: 'Replay dead letters: back on their service queue with fresh attempts and the same key',
        description:
          'The filters of GET /v1/dead-letters, or ids, or both; with neither, every dead letter the token may ' +
          'see. With `Accept: text/event-stream` the answer is a stream of `progress` events ending with `done` ' +
          '(the report); otherwise the report once finished. A client that disconnects stops the replay; ' +
          'running it again continues, and no dead letter is ever replayed twice.',
        tags: ['dead-letters'],
        body: jsonSchema(replayBodySchema),
        response: {
          200: {
            description: 'the report, or (Accept: text/event-stream) progress events and `done`',
            content: {
              'application/json': { schema: jsonSchema(replayReportSchema, { validate: false }) },
              'text/event-stream': {
                schema: {
                  type: 'string',
                  description:
                    '`event: progress` `data: { done, total, matched, replayed, skipped, failed, rate, etaMs, elapsedMs }`, ' +
                    'then `id: end` `event: done` `data: <report>` (or `event: failed` `data: { error }` when it could not go on)',
                },
              },
            },
          },
          204: { type: 'null', description: 'an EventSource reconnecting after `done` (Last-Event-ID: end)' },
          ...errorResponses(400, 401, 403, 422, 503),
        },
      },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const body = request.body;
      checkService(principal, body.service, true);
      const isStream = wantsEventStream(request);
      if (isStream && request.headers['last-event-id'] === END_ID) return reply.code(204).send();
      const filter = filterOf(body);
      const scope = scopeOf(principal);
      const controller = new AbortController();
      running.add(controller);
      abortOnDisconnect(reply, controller);
      const stream = isStream ? new SseStream(reply) : undefined;
      // Open at once: the client knows the replay started, even when the first dead letter takes a while.
      stream?.open();
      let lastSentAt = -Infinity;
      let pending: ReplayProgress | undefined;
      const send = (progress: ReplayProgress): void => {
        stream?.send(String(progress.done), 'progress', progressEvent(progress));
        lastSentAt = performance.now();
        pending = undefined;
      };
      request.log.info(
        { filter, ids: body.ids?.length, dryRun: body.dryRun, tokenName: principal.name },
        'replay started',
      );
      let report: ReplayReport;
      try {
        report = await replayDeadLetters(target, {
          ...(Object.keys(filter).length > 0 ? { filter } : {}),
          ...(body.ids === undefined ? {} : { ids: body.ids }),
          ...(scope === undefined ? {} : { scope }),
          dryRun: body.dryRun === true,
          ...(body.ratePerSecond === undefined ? {} : { ratePerSecond: body.ratePerSecond }),
          onlyWhenClosed: body.onlyWhenClosed === true,
          ...(body.limit === undefined ? {} : { limit: body.limit }),
          signal: controller.signal,
          ...(stream === undefined
            ? {}
            : {
                onProgress: (progress: ReplayProgress) => {
                  if (performance.now() - lastSentAt >= PROGRESS_INTERVAL_MS) send(progress);
                  else pending = progress;
                },
              }),
        });
      } catch (error) {
        running.delete(controller);
        if (stream === undefined) throw error;
        const mapped = toErrorResponse(error);
        // Type and message only (as handleError logs): an ioredis error carries its command's arguments.
        request.log.warn(
          { err: { type: mapped.body.error.type, message: error instanceof Error ? error.message : '' } },
          'replay failed',
        );
        stream.send('failed', 'failed', mapped.body);
        stream.end();
        return reply;
      }
      running.delete(controller);
      const { items: _items, ...summary } = report;
      request.log.info({ ...summary, tokenName: principal.name }, 'replay finished');
      if (stream === undefined) return report;
      if (pending !== undefined) send(pending);
      stream.send(END_ID, 'done', report);
      stream.end();
      return reply;
    },
  );

  app.post(
    '/v1/dead-letters/purge',
    {
      config: { scope: 'admin', redis: true },
      schema: {
        summary: 'Delete dead letters for good, by the filters and age',
        description:
          'The filters of GET /v1/dead-letters plus `olderThanMs`; with none, every dead letter the token may ' +
          'see. Only dead letters written up to the start are deleted. A client that disconnects stops it ' +
          'between batches; running it again deletes the rest.',
        tags: ['dead-letters'],
        body: jsonSchema(purgeBodySchema),
        response: {
          200: jsonSchema(purgeReportSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 503),
        },
      },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const body = request.body;
      // A service no longer in the services file may still have dead letters to purge.
      checkService(principal, body.service, false);
      const filter = filterOf(body);
      const scope = scopeOf(principal);
      const controller = new AbortController();
      running.add(controller);
      abortOnDisconnect(reply, controller);
      try {
        const report = await purgeDeadLetters(
          { connection: ctx.connection, prefix: ctx.prefix },
          {
            ...(Object.keys(filter).length > 0 ? { filter } : {}),
            ...(scope === undefined ? {} : { scope }),
            ...(body.olderThanMs === undefined ? {} : { olderThanMs: body.olderThanMs }),
            dryRun: body.dryRun === true,
            signal: controller.signal,
          },
        );
        request.log.info(
          { filter, olderThanMs: body.olderThanMs, ...report, tokenName: principal.name },
          'purge finished',
        );
        return report;
      } finally {
        running.delete(controller);
      }
    },
  );
}
