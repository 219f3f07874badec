/**
 * The queue layout: the contract for raw BullMQ producers and for Bull Board (DESIGN §3, docs/queue-layout.md).
 *
 * One BullMQ queue per service named `{<service>}`: the braces are a Redis Cluster hash tag, so each queue
 * lives in one slot and queues spread over shards, while a single Redis sees no difference.
 */
import { createHash } from 'node:crypto';

import { QueueKeys } from 'bullmq';

export const DEFAULT_PREFIX = 'ferry';
export const SERVICE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const DEAD_LETTER_QUEUE = '{dead-letter}';
export const MAX_IDEMPOTENCY_KEY_LENGTH = 200;

/** BullMQ queue name of a service's queue: `{crm}`. */
export function serviceQueueName(service: string): string {
  return `{${service}}`;
}

/** The service a queue name belongs to, or undefined for a name outside the layout. */
export function serviceFromQueueName(queueName: string): string | undefined {
  const match = /^\{([a-z0-9][a-z0-9_-]{0,63})\}$/.exec(queueName);
  return match?.[1] === 'dead-letter' ? undefined : match?.[1];
}

/** Name Bull Board shows: the queue name without its hash-tag braces. */
export function displayQueueName(queueName: string): string {
  return queueName.replace(/^\{(.*)\}$/, '$1');
}

/**
 * Job id for an idempotency key. Hashed because BullMQ ids may not contain `:` or be all digits, and keys
 * are free text up to 200 characters; a raw producer passes this as `jobId` to get the same deduplication.
 */
export function idempotentJobId(idempotencyKey: string): string {
  return `idem-${createHash('sha256').update(idempotencyKey).digest('base64url')}`;
}

/** Longest job id the API takes in a URL (an `idem-` id is 48 characters; a raw producer's own may be longer). */
export const MAX_JOB_ID_LENGTH = 300;

/**
 * Names of keys under a service queue's prefix, `<prefix>:{service}:<name>`, that are not jobs. A job's hash is
 * `<prefix>:{service}:<id>`, so a job id equal to one of them would read (or remove) a queue key as a job. The
 * list is BullMQ's own (QueueKeys, so a BullMQ upgrade keeps it current), plus names older BullMQ and Bull
 * versions used and Ferry's own key.
 */
export const RESERVED_JOB_IDS: ReadonlySet<string> = new Set([
  ...Object.keys(new QueueKeys().getKeys('q')),
  'waiting',
  'priority',
  'delay',
  'metrics',
  'breaker',
]);

/**
 * True for an id a job of a service queue can have: BullMQ's numbers, `idem-…` ids (idempotentJobId), replay
 * ids, or a raw producer's own `jobId`. False for an id no job can have: empty, longer than MAX_JOB_ID_LENGTH,
 * with a `:` (BullMQ's key separator: `1:logs`, `ferry:replayed:…` are keys, not jobs), or a reserved name.
 * Readers answer "no such job" for these without asking Redis.
 */
export function isPossibleJobId(id: string): boolean {
  return id.length >= 1 && id.length <= MAX_JOB_ID_LENGTH && !id.includes(':') && !RESERVED_JOB_IDS.has(id);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The `Idempotency-Key` sent for a job enqueued without an `idempotencyKey` (and `{{ job.idempotencyKey }}`).
 * Not the job id: BullMQ numbers jobs per queue from 1, so five services all sent `1`, and a Redis reset starts
 * the numbers again (issue 13). Instead `ferry-` and the random enqueue id Ferry's producers store in the job
 * data, or, for a raw BullMQ job without one (or with one that is not a UUID, which could repeat), a hash of
 * service, job id, job creation time and that id. Everything it is made of is fixed for the job's life, so every
 * attempt and every re-run after a stall sends the same key; a dead letter records it and its replay sends it
 * again (ops/dead-letter-replayer.ts). The `ferry-` prefix keeps it apart from the keys producers choose.
 */
export function defaultIdempotencyKey(
  service: string,
  jobId: string,
  createdAt: number,
  enqueueId: unknown,
): string {
  if (typeof enqueueId === 'string' && UUID.test(enqueueId)) return `ferry-${enqueueId.toLowerCase()}`;
  const seed = `${service}\n${jobId}\n${createdAt}\n${typeof enqueueId === 'string' ? enqueueId : ''}`;
  return `ferry-${createHash('sha256').update(seed).digest('base64url').slice(0, 32)}`;
}

/**
 * Dead-letter job id for one source job: fixed per job so that every writer (the worker, the sweep, a re-run
 * after a crash) adds the same dead letter and none is duplicated. The source job's creation time is part of
 * it because job ids come back: an idempotency key's id is free again once its job is removed, and a second
 * job under that id that also fails needs a dead letter of its own. `.` cannot occur in a service name and the
 * last part is digits, so the id splits unambiguously.
 */
export function deadLetterJobId(service: string, sourceJobId: string, sourceCreatedAt: number): string {
  return `dl-${service}.${sourceJobId}.${sourceCreatedAt}`;
}

/**
 * Field set on a source job's hash once its dead letter is written (value: the dead letter's id). The sweep
 * trusts it instead of looking for the dead letter, so a dead letter an operator purged or replayed is never
 * written again.
 */
export const DEAD_LETTERED_FIELD = 'ferryDeadLetter';

/** BullMQ job name of a dead letter: `<service>.<operation>`. */
export function deadLetterJobName(service: string, operation: string): string {
  return `${service}.${operation}`;
}

/** Redis key of a service's shared breaker state (src/breakers/shared-state.ts): in the service queue's slot. */
export function breakerKey(prefix: string, service: string): string {
  return `${prefix}:${serviceQueueName(service)}:breaker`;
}

/**
 * Redis keys of a service's tenant leases (`tenantConcurrency`, src/worker/tenant-leases.ts): a ZSET of the
 * leases in flight (`<tenant>\0<jobId>` scored by expiry, epoch ms) and a HASH of leases per tenant. Both in the
 * service queue's slot (one script touches both on Redis Cluster); the `:` keeps them apart from job hashes
 * (BullMQ refuses job ids with one).
 */
export function tenantLeaseKeys(prefix: string, service: string): { leases: string; counts: string } {
  const base = `${prefix}:${serviceQueueName(service)}:tenants`;
  return { leases: `${base}:leases`, counts: `${base}:counts` };
}

/** The tenant bucket of jobs without a tenant under `tenantConcurrency` (`_`: no tenant name starts with it). */
export const NO_TENANT = '_none';
