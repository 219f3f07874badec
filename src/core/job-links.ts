/**
 * The links between jobs as readers show them (issue 16): a completed job's `next` (a `then` step) and
 * `routedTo` (moved to its fallback service), and a job's `origin` (the reaction, route or schedule that made
 * it). The worker writes them into the job's return value and data; both are anyone's to write (a raw BullMQ
 * producer, anyone with Redis access), and a reader follows a link to another queue: each is checked here
 * before it is shown or followed, and a malformed one is left out, as if absent.
 */
import { z } from 'zod';

import { type JobOrigin, jobOriginSchema, type JobRef } from './job.ts';
import { isPossibleJobId, SERVICE_NAME_PATTERN } from './queue-layout.ts';

/** A link to a job that a reader may follow: a service name and an id a job can have. */
export const followableJobRefSchema = z.object({
  service: z.string().regex(SERVICE_NAME_PATTERN, 'must be a service name'),
  jobId: z.string().refine(isPossibleJobId, { error: 'must be a job id' }),
});

/** What a completed job links to, read from its return value. */
export interface ResultLinks {
  next?: JobRef;
  routedTo?: JobRef;
}

/**
 * A link a reader may follow, as followableJobRefSchema checks one, without zod (the stored-result decoder
 * runs it for every completed job it reads): a copy holding only `service` and `jobId`, or undefined.
 */
export function followableJobRef(service: unknown, jobId: unknown): JobRef | undefined {
  if (typeof service !== 'string' || !SERVICE_NAME_PATTERN.test(service)) return undefined;
  return typeof jobId === 'string' && isPossibleJobId(jobId) ? { service, jobId } : undefined;
}

/** A `{ service, jobId }` object as a followable link, or undefined. */
function linkIn(value: unknown): JobRef | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { service, jobId } = value as Record<string, unknown>;
  return followableJobRef(service, jobId);
}

/** `next` and `routedTo` of a result (decoded: core/stored-result.ts), each only when well-formed. */
export function readResultLinks(result: unknown): ResultLinks {
  if (typeof result !== 'object' || result === null || Array.isArray(result)) return {};
  const { next, routedTo } = result as Record<string, unknown>;
  const links: ResultLinks = {};
  const nextLink = linkIn(next);
  if (nextLink !== undefined) links.next = nextLink;
  const route = linkIn(routedTo);
  if (route !== undefined) links.routedTo = route;
  return links;
}

/** The job a completed job hands on to: its route (no call was made) first, else its next step. */
export function successorOf(links: ResultLinks): JobRef | undefined {
  return links.routedTo ?? links.next;
}

/** A job's `origin`, read from its data, only when well-formed. */
export function readJobOrigin(data: unknown): JobOrigin | undefined {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  const origin = (data as Record<string, unknown>).origin;
  if (origin === undefined) return undefined;
  const parsed = jobOriginSchema.safeParse(origin);
  return parsed.success ? parsed.data : undefined;
}
