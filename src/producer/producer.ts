import { randomUUID } from 'node:crypto';

import { Job, type JobsOptions, Queue } from 'bullmq';

import { ConfigurationError, type ErrorRecord, ValidationError } from '../core/errors.ts';
import { parseFailedReason } from '../core/failed-reason.ts';
import {
  type AttemptRecord,
  completedAttempt,
  type EnqueueRequest,
  type JobData,
  type JobOrigin,
  type JobRef,
  type JobResult,
  usedAttempts,
} from '../core/job.ts';
import { readJobOrigin, readResultLinks, successorOf } from '../core/job-links.ts';
import {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  DEFAULT_PREFIX,
  idempotentJobId,
  isPossibleJobId,
  serviceQueueName,
} from '../core/queue-layout.ts';
import { createRedisConnection, type RedisClient, waitUntilReady } from '../core/redis.ts';
import { type Keyring, sealJobData } from '../core/sealed-data.ts';
import { storedDeliveryStateSchema } from '../core/stored-history.ts';
import { decodeStoredResult } from '../core/stored-result.ts';
import type { TraceContext } from '../core/trace-context.ts';
import {
  checkReplicaSettings,
  DEFAULT_MIN_REPLICAS,
  DEFAULT_REPLICA_TIMEOUT_MS,
  waitForReplicas,
} from './replicas.ts';
import { endEnqueueTracing, startEnqueueTracing } from './trace-context.ts';
import { DEFAULT_MAX_METADATA_BYTES, type ServiceCatalog, validateEnqueueRequest } from './validate.ts';

export interface ProducerOptions {
  /** A Redis URL, or a connection to share (producer role: `enableOfflineQueue: false` fails fast when Redis is down). */
  connection: string | RedisClient;
  /** Key prefix; default `FERRY_PREFIX`'s default, `ferry`. */
  prefix?: string;
  /** The services the producer may enqueue for; when given, unknown services and operations are refused at once. */
  services?: ServiceCatalog;
  /** Largest `metadata` in JSON bytes; default DEFAULT_MAX_METADATA_BYTES (16 KiB). */
  maxMetadataBytes?: number;
  /**
   * Replicas that must acknowledge each enqueue (Redis `WAIT`) before it resolves; default 0: no WAIT. When
   * fewer acknowledge within `replicaTimeoutMs`, the call rejects with ReplicaTimeoutError, though the job may
   * have been added: retry with the same idempotency key. WAIT blocks the connection it is sent on, so give a
   * producer with this set a connection of its own.
   */
  minReplicas?: number;
  /** How long an enqueue waits for `minReplicas` (1 to 30000 ms); default 1000. */
  replicaTimeoutMs?: number;
  /**
   * FERRY_SECRETS_KEY's keyring (`parseKeyring`, `loadKeyring`): a job of a `sensitive: true` operation of
   * `services` is sealed with its current key before it is written. Without it such a job is refused with a
   * ConfigurationError, and nothing is written.
   */
  keyring?: Keyring;
}

export interface EnqueueOptions {
  /**
   * A trace context to continue when the request's metadata has none (the API passes its request's
   * `traceparent`/`tracestate` headers). Stored in the job's metadata; with an SDK registered, the job's send
   * span is its child (unless a span is active: it is then the parent).
   */
  trace?: TraceContext | undefined;
}

export interface EnqueueResult {
  id: string;
  service: string;
  operation: string;
  /** `false` when an idempotency key matched a job enqueued before: that job is returned, nothing is added. */
  created: boolean;
}

export type JobState =
  'waiting' | 'active' | 'delayed' | 'prioritized' | 'completed' | 'dead_lettered' | 'unknown';

export interface JobView {
  id: string;
  service: string;
  operation: string;
  state: JobState;
  /** Ferry attempts used so far. */
  attempts: number;
  history: AttemptRecord[];
  lastError: ErrorRecord | undefined;
  result: JobResult | undefined;
  /** Id in `{dead-letter}` when the job was dead-lettered. */
  deadLetterId: string | undefined;
  enqueuedAt: number;
  tenant: string | undefined;
  idempotencyKey: string | undefined;
  metadata: Record<string, unknown> | undefined;
  /** A completed job's next step (`then`): the job to follow. Checked: absent when malformed. */
  next?: JobRef;
  /** A completed job that was moved to its fallback service (no call was made): the job to follow. */
  routedTo?: JobRef;
  /** Why Ferry itself enqueued this job (an onFailure rule, a `then` step, a route, a schedule). */
  origin?: JobOrigin;
  /** The job's input and metadata are sealed (a sensitive operation's): `metadata` is then not shown. */
  sealed?: true;
}

/** What `waitFor(…, { follow: true })` returns: the last job of the chain, and every job of it in order. */
export interface FollowedJobView extends JobView {
  /** The jobs followed, the first one (the one waited for) to this last one. */
  chain: JobRef[];
}

export interface WaitOptions {
  /** The whole wait, every job of a followed chain included; default 30 s. */
  timeoutMs?: number;
}

export interface FollowOptions extends WaitOptions {
  /**
   * Follow the chain: a completed job's `routedTo` (fallback) or `next` (`then` step), job after job, until
   * one completes without either or is dead-lettered.
   */
  follow: true;
  /** Links followed at most (DEFAULT_MAX_FOLLOW_HOPS); one more rejects with FollowError. */
  maxHops?: number;
}

/** Links `waitFor` follows at most by default: a `then` chain (16 deep at most) with a route at every step. */
export const DEFAULT_MAX_FOLLOW_HOPS = 32;

/**
 * `waitFor(…, { follow: true })` could not follow the chain: a link names a job that does not exist (removed,
 * or never added), or the chain is longer than `maxHops`. `ref` is the job at fault, `chain` the jobs followed.
 */
export class FollowError extends Error {
  readonly type = 'FollowError';
  readonly ref: JobRef;
  readonly chain: JobRef[];
  constructor(message: string, ref: JobRef, chain: JobRef[]) {
    super(message);
    this.ref = ref;
    this.chain = chain;
  }
  override get name(): string {
    return this.type;
  }
}

/** `waitFor` gave up: the job is still running (or was never there). `job` is its last known view. */
export class WaitTimeoutError extends Error {
  readonly type = 'WaitTimeoutError';
  readonly job: JobView | undefined;
  constructor(message: string, job: JobView | undefined) {
    super(message);
    this.job = job;
  }
  override get name(): string {
    return this.type;
  }
}

/** A call on a Producer after `close()`. */
export class ProducerClosedError extends Error {
  readonly type = 'ProducerClosedError';
  override get name(): string {
    return this.type;
  }
}

const TERMINAL: ReadonlySet<JobState> = new Set(['completed', 'dead_lettered']);

/**
 * KEYS: wait, paused, delayed, prioritized (BullMQ's keys of the queue), the job's hash; ARGV[1] job id.
 * Takes the job out of the first of them that holds it: 1; the job exists but waits in none (active, done): 0;
 * no such job: -1. All keys share the queue's hash tag, so it runs on a Redis Cluster too.
 */
const TAKE_WAITING_JOB = `
if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then return 1 end
if redis.call('LREM', KEYS[2], 1, ARGV[1]) > 0 then return 1 end
if redis.call('ZREM', KEYS[3], ARGV[1]) > 0 then return 1 end
if redis.call('ZREM', KEYS[4], ARGV[1]) > 0 then return 1 end
return 0
`;

/** Enqueues integration jobs. Imports no worker, HTTP or breaker code: safe to embed in any service. */
export class Producer {
  readonly prefix: string;
  /** Largest `metadata` this producer accepts (JSON bytes). */
  readonly maxMetadataBytes: number;
  readonly #connection: RedisClient;
  readonly #ownsConnection: boolean;
  readonly #catalog: ServiceCatalog | undefined;
  readonly #queues = new Map<string, Queue<JobData, JobResult>>();
  readonly #minReplicas: number;
  readonly #replicaTimeoutMs: number;
  readonly #slots = new Map<string, number>();
  readonly #keyring: Keyring | undefined;
  /** Some operation of `services` is sensitive: only then is a request's operation looked at. */
  readonly #sealing: boolean;
  #closed = false;

  constructor(options: ProducerOptions) {
    this.prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#catalog = options.services;
    this.maxMetadataBytes = options.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES;
    this.#minReplicas = options.minReplicas ?? DEFAULT_MIN_REPLICAS;
    this.#replicaTimeoutMs = options.replicaTimeoutMs ?? DEFAULT_REPLICA_TIMEOUT_MS;
    this.#keyring = options.keyring;
    this.#sealing = hasSensitiveOperation(options.services);
    checkReplicaSettings(this.#minReplicas, this.#replicaTimeoutMs);
    if (typeof options.connection === 'string') {
      this.#connection = createRedisConnection({ url: options.connection }, 'producer', 'ferry-producer');
      this.#ownsConnection = true;
    } else {
      this.#connection = options.connection;
      this.#ownsConnection = false;
    }
  }

  /**
   * Validates and enqueues one job. Throws ValidationError (with `field`) for a bad request, and
   * ReplicaTimeoutError when `minReplicas` did not acknowledge it in time.
   */
  async enqueue(request: EnqueueRequest, options?: EnqueueOptions): Promise<EnqueueResult> {
    const valid = validateEnqueueRequest(request, this.#catalog, '', {
      maxMetadataBytes: this.maxMetadataBytes,
    });
    const [result] = await this.#add([valid], options?.trace);
    return result!;
  }

  /** Validates every request first; adds none if any is bad (the error's field is `[i].…`). */
  async enqueueMany(requests: readonly EnqueueRequest[], options?: EnqueueOptions): Promise<EnqueueResult[]> {
    const valid = requests.map((request, i) =>
      validateEnqueueRequest(request, this.#catalog, `[${i}].`, { maxMetadataBytes: this.maxMetadataBytes }),
    );
    return this.#add(valid, options?.trace);
  }

  async get(service: string, id: string): Promise<JobView | undefined> {
    this.#assertOpen();
    // `meta`, `events`, `1:logs`…: queue keys, not jobs (read as one, a key is a fake job or a WRONGTYPE error).
    if (!isPossibleJobId(id)) return undefined;
    await this.#ready();
    const queue = this.#queue(service);
    // State first, then the job: read the other way round, a job that completes in between would show as
    // completed with the data it had while active (no result yet).
    const rawState = await queue.getJobState(id);
    const job = await Job.fromId<JobData, unknown>(queue, id);
    if (job === undefined) return undefined;
    const state: JobState =
      rawState === 'failed'
        ? 'dead_lettered'
        : rawState === 'waiting-children' || rawState === 'unknown'
          ? 'unknown'
          : rawState === 'waiting'
            ? 'waiting'
            : rawState;
    // The worker's bookkeeping, checked like the worker checks it: job data is anyone's to write.
    const parsed = storedDeliveryStateSchema.safeParse(job.data?.ferry);
    const delivery = parsed.success ? parsed.data : undefined;
    const recorded = delivery?.attempts ?? [];
    const failedAttempts = usedAttempts(recorded);
    // Either stored form, checked (the return value is anyone's to write); metadata from the job's data.
    const result = state === 'completed' ? decodeStoredResult(job.returnvalue, job.data) : undefined;
    const last = [...recorded].reverse().find((a) => a.type !== undefined);
    const completedRun = completedAttempt(result, job.finishedOn, failedAttempts);
    const history = completedRun === undefined ? recorded : [...recorded, completedRun];
    const lastError: ErrorRecord | undefined =
      state === 'dead_lettered'
        ? (delivery?.final ?? parseFailedReason(job.failedReason, job.stalledCounter))
        : last?.type === undefined
          ? undefined
          : {
              type: last.type,
              message: last.message,
              ...(last.status === undefined ? {} : { status: last.status }),
            };
    const view: JobView = {
      id,
      service,
      operation: job.name,
      state,
      attempts: result?.attempts ?? failedAttempts,
      history,
      lastError,
      result,
      deadLetterId: state === 'dead_lettered' ? deadLetterJobId(service, id, job.timestamp) : undefined,
      enqueuedAt: job.timestamp,
      tenant: job.data?.tenant,
      idempotencyKey: job.data?.idempotencyKey,
      metadata: job.data?.metadata,
    };
    if (typeof job.data?.sealed === 'string') view.sealed = true;
    // The links, checked (the return value and the data are anyone's to write): a client follows them.
    const { next, routedTo } = readResultLinks(result);
    if (next !== undefined) view.next = next;
    if (routedTo !== undefined) view.routedTo = routedTo;
    const origin = readJobOrigin(job.data);
    if (origin !== undefined) view.origin = origin;
    return view;
  }

  /**
   * Resolves when the job completed or was dead-lettered; rejects after `timeoutMs` (default 30 s). Polls
   * with a growing interval: cheap for a client that waits on a few jobs.
   *
   * With `follow: true` it then follows the chain: while the finished job completed with a `routedTo` (moved to
   * its fallback service) or a `next` (a `then` step), it waits for that job, and resolves with the last one
   * and the chain of jobs followed. The timeout covers the whole chain. Rejects with FollowError when a link
   * names a job that does not exist, or after `maxHops` links (default 32).
   */
  async waitFor(service: string, id: string, options: FollowOptions): Promise<FollowedJobView>;
  async waitFor(service: string, id: string, options?: WaitOptions): Promise<JobView>;
  async waitFor(
    service: string,
    id: string,
    options: WaitOptions & { follow?: boolean; maxHops?: number } = {},
  ): Promise<JobView | FollowedJobView> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    if (options.follow !== true) return this.#waitOne(service, id, deadline, timeoutMs);
    const maxHops = options.maxHops ?? DEFAULT_MAX_FOLLOW_HOPS;
    // NaN would compare false with every length: a cycle would then be followed until the timeout.
    if (!Number.isSafeInteger(maxHops) || maxHops < 0)
      throw new ValidationError('maxHops: must be an integer >= 0', { field: 'maxHops' });
    const chain: JobRef[] = [{ service, jobId: id }];
    let view = await this.#waitOne(service, id, deadline, timeoutMs);
    for (;;) {
      const link = view.state === 'completed' ? successorOf(view) : undefined;
      if (link === undefined) return { ...view, chain };
      const from = `${view.service}/${view.id}`;
      const to = `${link.service}/${link.jobId}`;
      if (chain.length > maxHops) {
        throw new FollowError(
          `chain from ${service}/${id} is longer than ${maxHops} links (at ${to})`,
          link,
          [...chain],
        );
      }
      chain.push(link);
      if ((await this.get(link.service, link.jobId)) === undefined) {
        // The link is written when the linked job already exists: a missing one was removed (or never added).
        throw new FollowError(`job ${to}, which ${from} links to, does not exist`, link, [...chain]);
      }
      view = await this.#waitOne(link.service, link.jobId, deadline, timeoutMs);
    }
  }

  async #waitOne(service: string, id: string, deadline: number, timeoutMs: number): Promise<JobView> {
    let interval = 20;
    for (;;) {
      const view = await this.get(service, id);
      if (view !== undefined && TERMINAL.has(view.state)) return view;
      if (Date.now() >= deadline) {
        throw new WaitTimeoutError(
          `job ${service}/${id} did not finish within ${timeoutMs} ms (state: ${view?.state ?? 'missing'})`,
          view,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, interval));
      interval = Math.min(interval * 2, 500);
    }
  }

  /**
   * Cancels a job no worker has taken: `cancelled`, `missing` (no such job), or `notCancellable` (a worker took
   * it, or it finished). The job is first taken out of the list or set it waits in by one atomic script, so a
   * worker cannot take it in between; only then is it removed. A check of its state followed by a removal
   * could remove a job that a worker took and completed in between.
   */
  async cancel(service: string, id: string): Promise<'cancelled' | 'missing' | 'notCancellable'> {
    this.#assertOpen();
    if (!isPossibleJobId(id)) return 'missing';
    await this.#ready();
    const queue = this.#queue(service);
    const keys = queue.keys;
    const taken = (await this.#connection.eval(
      TAKE_WAITING_JOB,
      5,
      keys.wait!,
      keys.paused!,
      keys.delayed!,
      keys.prioritized!,
      queue.toKey(id),
      id,
    )) as number;
    if (taken === -1) return 'missing';
    if (taken === 0) return 'notCancellable';
    await queue.remove(id);
    return 'cancelled';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#queues.values()].map((queue) => queue.close()));
    if (this.#ownsConnection) this.#connection.disconnect();
  }

  async #add(requests: readonly EnqueueRequest[], trace?: TraceContext): Promise<EnqueueResult[]> {
    this.#assertOpen();
    // Every sensitive job is checked before anything is added: without a key, none is written in plaintext.
    const sensitive = this.#sealing ? requests.map((request) => this.#isSensitive(request)) : [];
    const keyring = this.#keyring;
    if (keyring === undefined && sensitive.includes(true)) {
      const request = requests[sensitive.indexOf(true)]!;
      throw new ConfigurationError(
        `${request.service}.${request.operation} is sensitive: its jobs are sealed, and this producer has no keyring (FERRY_SECRETS_KEY)`,
      );
    }
    await this.#ready();
    // After validation: a trace context never makes a job too big to enqueue (it is bounded, a few hundred bytes).
    // Before sealing: a sealed job's trace context is sealed with the rest of its metadata.
    const tracing = startEnqueueTracing(requests, trace);
    const byService = new Map<string, PendingJob[]>();
    requests.forEach((original, index) => {
      const list = byService.get(original.service) ?? [];
      const metadata = tracing?.metadata[index];
      const request =
        tracing === undefined || metadata === original.metadata ? original : { ...original, metadata };
      const enqueueId = randomUUID();
      let data = toJobData(request, enqueueId);
      let jobId: string | undefined;
      if (sensitive[index] === true) {
        // The job id is part of the seal: known before the add. The enqueue id (a UUID: never a number, no
        // `:`, so BullMQ takes it as a custom id) unless the idempotency key fixes it.
        jobId = request.idempotencyKey === undefined ? enqueueId : idempotentJobId(request.idempotencyKey);
        data = sealJobData(keyring!, { service: request.service, tenant: request.tenant, jobId }, data);
      }
      const pending: PendingJob = { index, request, enqueueId, data };
      if (jobId !== undefined) pending.jobId = jobId;
      list.push(pending);
      byService.set(request.service, list);
    });
    const results: EnqueueResult[] = new Array<EnqueueResult>(requests.length);
    try {
      await this.#addByService(byService, results);
    } catch (error) {
      endEnqueueTracing(tracing, undefined, error);
      throw error;
    }
    // Only when there are send spans to end: an untraced add builds no id list.
    if (tracing?.spans !== undefined)
      endEnqueueTracing(
        tracing,
        results.map((result) => result.id),
      );
    return results;
  }

  async #addByService(byService: Map<string, PendingJob[]>, results: EnqueueResult[]): Promise<void> {
    await Promise.all(
      [...byService].map(async ([service, items]) => {
        const queue = this.#queue(service);
        // One job: a plain add. addBulk opens a MULTI, and ioredis copies every BullMQ script command onto each
        // new pipeline: about 100 µs of CPU per call, more than the add itself (bench/README.md, Enqueue).
        const jobs =
          items.length === 1
            ? [
                await queue.add(
                  items[0]!.request.operation,
                  items[0]!.data,
                  jobOptions(items[0]!.request, items[0]!.jobId),
                ),
              ]
            : await queue.addBulk(
                items.map(({ request, data, jobId }) => ({
                  name: request.operation,
                  data,
                  opts: jobOptions(request, jobId),
                })),
              );
        // An add with an existing jobId returns that id but keeps the first job's data: compare the enqueue
        // id we wrote with the stored one to tell a repeat (DESIGN §8).
        const client = this.#connection;
        await Promise.all(
          items.map(async (item, i) => {
            const id = jobs[i]?.id ?? '';
            let created = true;
            if (item.request.idempotencyKey !== undefined) {
              const stored = await client.hget(queue.toKey(id), 'data');
              created = stored === null || (JSON.parse(stored) as JobData).enqueueId === item.enqueueId;
            }
            results[item.index] = { id, service, operation: item.request.operation, created };
          }),
        );
        // After every write of this queue's jobs (a repeat too: the first try may be the one that timed out),
        // on the connection that made them.
        await waitForReplicas(
          client,
          queue.keys.meta!,
          this.#minReplicas,
          this.#replicaTimeoutMs,
          this.#slots,
        );
      }),
    );
  }

  /** True for a job of a `sensitive` operation of the producer's services (one Map read for the others). */
  #isSensitive(request: EnqueueRequest): boolean {
    const operation = this.#catalog?.get(request.service)?.operations.get(request.operation);
    return (operation as { sensitive?: boolean } | undefined)?.sensitive === true;
  }

  #assertOpen(): void {
    if (this.#closed) throw new ProducerClosedError('producer is closed');
  }

  #queue(service: string): Queue<JobData, JobResult> {
    this.#assertOpen();
    let queue = this.#queues.get(service);
    if (queue === undefined) {
      queue = new Queue<JobData, JobResult>(serviceQueueName(service), {
        connection: this.#connection,
        prefix: this.prefix,
      });
      // Connection errors reach the caller as rejected calls; without a listener BullMQ would also print each
      // failed reconnect to stderr.
      queue.on('error', ignoreError);
      this.#queues.set(service, queue);
    }
    return queue;
  }

  async #ready(): Promise<void> {
    if (this.#connection.status !== 'ready') await waitUntilReady(this.#connection, 5_000);
  }
}

function ignoreError(): void {}

/** One job of an enqueue call, ready to add: its data as stored (sealed when its operation is sensitive). */
interface PendingJob {
  index: number;
  request: EnqueueRequest;
  enqueueId: string;
  /** Set when the id must be known before the add (a sealed job's id is part of its seal). */
  jobId?: string;
  data: JobData;
}

function hasSensitiveOperation(catalog: ServiceCatalog | undefined): boolean {
  for (const service of catalog?.values() ?? [])
    for (const operation of service.operations.values())
      if ((operation as { sensitive?: boolean } | undefined)?.sensitive === true) return true;
  return false;
}

function toJobData(request: EnqueueRequest, enqueueId: string): JobData {
  const data: JobData = { input: request.input ?? null, enqueueId };
  if (request.tenant !== undefined) data.tenant = request.tenant;
  if (request.idempotencyKey !== undefined) data.idempotencyKey = request.idempotencyKey;
  if (request.metadata !== undefined) data.metadata = request.metadata;
  return data;
}

function jobOptions(request: EnqueueRequest, jobId?: string): JobsOptions {
  const options: JobsOptions = {};
  if (jobId !== undefined) options.jobId = jobId;
  else if (request.idempotencyKey !== undefined) options.jobId = idempotentJobId(request.idempotencyKey);
  if (request.delayMs !== undefined && request.delayMs > 0) options.delay = request.delayMs;
  if (request.priority !== undefined && request.priority > 0) options.priority = request.priority;
  return options;
}

/** The dead-letter queue's name, for tools that read it with plain BullMQ. */
export const deadLetterQueueName = DEAD_LETTER_QUEUE;
