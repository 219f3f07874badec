/**
 * Server-Sent Events of jobs (DESIGN §6, issue 3): `GET /v1/jobs/:service/:id/events` for one job, and
 * `GET /v1/events?service=` for every job of a service. Events: queued, active, retrying, held, completed,
 * dead_lettered (core/job-events.ts), each with `id:` = its stream entry id, for `Last-Event-ID`.
 *
 * One job's stream starts with the job's history still held in the events stream (so a client that opens it
 * right after enqueueing still sees `queued`), continues live, and ends after the terminal event. A job that
 * already finished gets its terminal event at once, built from the job when the stream no longer holds it.
 * The terminal event's id ends in `:end`: a client that reconnects with it (an EventSource does, by default)
 * gets 204, which tells it to stop, instead of the terminal event again and again.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';

import { ValidationError } from '../../core/errors.ts';
import { type JobEvent, STREAM_ID_PATTERN, TERMINAL_JOB_EVENTS } from '../../core/job-events.ts';
import type { JobView, Producer } from '../../producer/producer.ts';
import { NotFoundError } from '../errors.ts';
import {
  errorResponses,
  jobParamsSchema,
  jsonSchema,
  serviceName,
  type ZodTypeProvider,
} from '../schemas.ts';
import { type SseOptions, SseStream } from '../sse.ts';
import type { JobEventHub, JobInfo } from './hub.ts';

/**
 * Decides what a request may read. Throws (401/403) when it may not read the service at all; otherwise returns
 * whether it may read a job of a given tenant (`undefined`: a job without one). Two steps, because the
 * service-wide stream is allowed for a tenant-limited token and then filtered event by event.
 */
export type JobEventsAuthorizer = (
  request: FastifyRequest,
  access: { scope: 'jobs:read'; service: string },
) => (tenant: string | undefined) => boolean;

export interface JobEventsRouteDeps {
  hub: JobEventHub;
  producer: Pick<Producer, 'get'>;
  /** The services the API serves (the services file's map will do); others are 404. */
  services: { has(service: string): boolean };
  /** Absent: everyone may read everything (tests, a private `ferry dev`). */
  authorize?: JobEventsAuthorizer;
  sse?: SseOptions;
}

/** Suffix of a single-job stream's terminal event id (see the module comment). */
const END_SUFFIX = ':end';

const eventsQuerySchema = z.object({ service: serviceName });
const LAST_EVENT_ID = /^(\d{1,20}-\d{1,20})(:end)?$/;

const sseResponse = (description: string): Record<string, unknown> => ({
  description,
  content: {
    'text/event-stream': {
      schema: {
        type: 'string',
        description:
          'Events `id: <stream id>`, `event: queued|active|retrying|held|completed|dead_lettered`, `data: <JSON>`; comment lines (`: heartbeat`) keep the connection alive',
      },
    },
  },
});
export function jobEventsRoutes(fastify: FastifyInstance, deps: JobEventsRouteDeps): void {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const open = new Set<SseStream>();
  // Fastify's close waits for every response to end: end the streams first, or it would wait forever.
  app.addHook('preClose', async () => {
    for (const stream of open) stream.end();
  });

  function startStream(reply: FastifyReply): SseStream {
    const stream = new SseStream(reply, deps.sse);
    open.add(stream);
    stream.onClose(() => open.delete(stream));
    return stream;
  }

  function assertService(service: string): void {
    if (!deps.services.has(service))
      throw new NotFoundError(`unknown service "${service}" (not in the services file)`);
  }

  function canRead(request: FastifyRequest, service: string): (tenant: string | undefined) => boolean {
    return deps.authorize?.(request, { scope: 'jobs:read', service }) ?? (() => true);
  }

  app.get(
    '/v1/jobs/:service/:id/events',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: "A job's lifecycle events (Server-Sent Events)",
        description:
          'The history still held, then live events, ending after `completed` or `dead_lettered`. Send `Last-Event-ID` to resume; 204 once the terminal event was received.',
        tags: ['jobs'],
        params: jsonSchema(jobParamsSchema),
        response: {
          200: sseResponse('event stream'),
          204: { type: 'null', description: 'the job finished and its terminal event was received' },
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request, reply) => {
      const { service, id } = request.params;
      assertService(service);
      const resume = parseLastEventId(request.headers['last-event-id']);
      const mayRead = canRead(request, service);
      const view = await deps.producer.get(service, id);
      // Another tenant's job does not exist for a tenant-limited token (as GET /v1/jobs/:service/:id).
      if (view === undefined || !mayRead(view.tenant))
        throw new NotFoundError(`job "${id}" of service "${service}" not found`);
      const isFinished = view.state === 'completed' || view.state === 'dead_lettered';
      if (resume?.ended === true && isFinished) return reply.code(204).send();

      const stream = startStream(reply);
      let sentTerminal = false;
      const subscription = await deps.hub.subscribe({
        service,
        jobId: id,
        // After an `:end` id on a job that is not finished (its id was reused), start over.
        replay:
          resume === undefined || resume.ended ? { fromEnqueuedAt: view.enqueuedAt } : { after: resume.id },
        info: infoOf(view),
        onEvent(event) {
          if (stream.closed) return;
          sentTerminal ||= TERMINAL_JOB_EVENTS.has(event.event);
          stream.send(sentTerminal ? `${event.id}${END_SUFFIX}` : event.id, event.event, event.data);
          if (sentTerminal) stream.end();
        },
        onNotice: (text) => stream.comment(text),
        onRemoved() {
          stream.comment('the job was removed');
          stream.end();
        },
        onEnd: () => stream.end(),
      });
      stream.onClose(() => subscription.close());
      if (isFinished && !sentTerminal) {
        // The stream no longer holds the job's end: say it from the job itself.
        const terminal = terminalEvent(view, subscription.lastEventId ?? resume?.id ?? '0-0');
        if (terminal === undefined) stream.comment(`the job is ${view.state}`);
        else stream.send(`${terminal.id}${END_SUFFIX}`, terminal.event, terminal.data);
        stream.end();
      }
      stream.open();
      return reply;
    },
  );

  app.get(
    '/v1/events',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: "Every job's lifecycle events of one service (Server-Sent Events)",
        description:
          "Live events from now on, or after `Last-Event-ID`. A tenant-limited token sees its tenants' jobs only.",
        tags: ['jobs'],
        querystring: jsonSchema(eventsQuerySchema),
        response: { 200: sseResponse('event stream'), ...errorResponses(400, 401, 403, 404, 503) },
      },
    },
    async (request, reply) => {
      const { service } = request.query;
      assertService(service);
      const resume = parseLastEventId(request.headers['last-event-id']);
      const mayRead = canRead(request, service);
      // One decision per tenant seen, not one per event.
      const decided = new Map<string | undefined, boolean>();
      const filter =
        deps.authorize === undefined
          ? undefined
          : (event: JobEvent): boolean => {
              const tenant = event.data.tenant;
              let allowed = decided.get(tenant);
              if (allowed === undefined) decided.set(tenant, (allowed = mayRead(tenant)));
              return allowed;
            };
      const stream = startStream(reply);
      const subscription = await deps.hub.subscribe({
        service,
        ...(resume === undefined ? {} : { replay: { after: resume.id } }),
        ...(filter === undefined ? {} : { filter }),
        onEvent: (event) => stream.send(event.id, event.event, event.data),
        onNotice: (text) => stream.comment(text),
        onEnd: () => stream.end(),
      });
      stream.onClose(() => subscription.close());
      stream.open();
      return reply;
    },
  );
}

function parseLastEventId(header: string | string[] | undefined): { id: string; ended: boolean } | undefined {
  const value = Array.isArray(header) ? header[header.length - 1] : header;
  if (value === undefined || value === '') return undefined;
  const match = LAST_EVENT_ID.exec(value);
  if (match === null || !STREAM_ID_PATTERN.test(match[1]!)) {
    throw new ValidationError('Last-Event-ID: must be an event id this API sent (`<ms>-<seq>`)', {
      field: 'Last-Event-ID',
    });
  }
  return { id: match[1]!, ended: match[2] !== undefined };
}

function infoOf(view: JobView): JobInfo {
  const info: JobInfo = { operation: view.operation };
  if (view.tenant !== undefined) info.tenant = view.tenant;
  if (view.metadata !== undefined) info.metadata = view.metadata;
  return info;
}

/** The terminal event of a finished job, from the job: what its stream entry would have said. */
function terminalEvent(view: JobView, id: string): JobEvent | undefined {
  const base = { jobId: view.id, service: view.service, ...infoOf(view) };
  // The last run, as the job's history lists it (a completed one is built from the result).
  const lastRun = view.history.at(-1);
  const run = lastRun === undefined ? {} : { run: lastRun };
  if (view.state === 'completed' && view.result !== undefined) {
    const links = {
      ...(view.next === undefined ? {} : { next: view.next }),
      ...(view.routedTo === undefined ? {} : { routedTo: view.routedTo }),
    };
    const completedRun = lastRun?.outcome === 'completed' ? run : {};
    return { id, event: 'completed', data: { ...base, result: view.result, ...completedRun, ...links } };
  }
  if (view.state === 'dead_lettered' && view.lastError !== undefined) {
    const data = { ...base, error: view.lastError, attempts: view.attempts, ...run };
    return {
      id,
      event: 'dead_lettered',
      data: view.deadLetterId === undefined ? data : { ...data, deadLetterId: view.deadLetterId },
    };
  }
  return undefined;
}
