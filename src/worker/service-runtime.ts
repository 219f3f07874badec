/**
 * What a worker pool runs for one service: its queue handle, undici pools, delivery processor and tracked BullMQ
 * Worker, and the checks that dead-letter the jobs BullMQ fails without running them.
 */

import { type Job, Queue } from 'bullmq';

import type { BreakerOptions, BreakerRegistry } from '../breakers/index.ts';
import type { DeliveryEventListener } from '../core/delivery-events.ts';
import type { JobData } from '../core/job.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { ServiceConfig } from '../core/services/types.ts';
import { encodeStoredResult, type StoredResult } from '../core/stored-result.ts';
import { type Clock, MINUTE, SECOND } from '../core/time.ts';
import { type DeadLetterReaction, reconcileJob, sweepFailed } from '../dead-letter/reconciler.ts';
import type { DeadLetterWriter } from '../dead-letter/writer.ts';
import type { Scrubber } from '../secrets/scrub.ts';
import { createDeliveryProcessor } from './delivery.ts';
import type { FallbackRouter } from './fallback-route.ts';
import type { FollowUps } from './follow-ups.ts';
import { egressScopeOf } from './http/egress.ts';
import type { TokenCache } from './http/oauth2.ts';
import { PoolSet } from './http/pools.ts';
import { createJobEventPublisher } from './job-event-publisher.ts';
import { WORKER_POOL_DEFAULTS, type WorkerPoolOptions } from './pool-options.ts';
import { isScheduleTick, runScheduleTick } from './schedules.ts';
import { createTenantLeases } from './tenant-leases.ts';
import { TrackedWorker } from './tracked-worker.ts';

/** What every service of one pool shares. */
export interface PoolContext {
  readonly options: WorkerPoolOptions;
  readonly clock: Clock;
  readonly random: () => number;
  readonly lockDurationMs: number;
  readonly scrubber: Scrubber;
  readonly writer: DeadLetterWriter;
  readonly tokens: TokenCache;
  readonly breakers: BreakerRegistry;
  /** Fallback routing (fallback-route.ts) and onFailure/`then` follow-ups (follow-ups.ts). */
  readonly fallbacks: FallbackRouter;
  readonly followUps: FollowUps;
  /** The pool's delivery events (their listeners cannot throw into delivery). */
  readonly emit: DeliveryEventListener;
  /**
   * Aborted when the shutdown deadline passes: every in-flight call of every service stops and its job is put
   * back. One signal for the pool rather than BullMQ's one per job (see DeliveryProcessor); calls follow it
   * through one listener per signal (see callDownstream).
   */
  readonly shutdownSignal: AbortSignal;
}

export interface ServiceRuntime {
  service: ServiceConfig;
  queue: Queue<JobData, StoredResult>;
  worker: TrackedWorker;
  pools: PoolSet;
  lastSweepMs: number;
  /** The onFailure follow-ups of the dead letters the sweep writes. */
  reaction: DeadLetterReaction;
}

/** A service's breaker options, the same in every process (and for a fallback this process only reads). */
export function breakerOptionsOf(service: ServiceConfig): BreakerOptions {
  let longestTimeoutMs = service.timeoutMs;
  for (const operation of service.operations.values())
    longestTimeoutMs = Math.max(longestTimeoutMs, operation.timeoutMs);
  return {
    ...service.breaker,
    // The probe is one call: its lock must outlive the slowest operation, or a second process probes too.
    probeTimeoutMs: Math.max(WORKER_POOL_DEFAULTS.breakerProbeTimeoutMs, longestTimeoutMs + 5 * SECOND),
  };
}

export function createServiceRuntime(context: PoolContext, service: ServiceConfig): ServiceRuntime {
  const { connection, prefix } = context.options;
  const queue = new Queue<JobData, StoredResult>(serviceQueueName(service.name), { connection, prefix });
  const pools = new PoolSet({
    connections: service.concurrency,
    egress: egressScopeOf(service),
    proxyEnv: context.options.proxyEnv,
    scrubber: context.scrubber,
  });
  const worker = createWorker(context, service, createProcessor(context, service, queue, pools));
  const { followUps } = context;
  const runtime: ServiceRuntime = {
    service,
    queue,
    worker,
    pools,
    lastSweepMs: 0,
    reaction: {
      plan: (record, deadLetterId, data) => {
        const plan = followUps.planFailure(service, record, deadLetterId, data);
        return plan?.kind === 'add' ? () => followUps.add(plan.job) : undefined;
      },
    },
  };
  checkJobsFailedOutsideTheProcessor(context, runtime);
  return runtime;
}

/** Delivers a service's jobs; a schedule's tick is not delivered: it adds the schedule's run (schedules.ts). */
function createProcessor(
  context: PoolContext,
  service: ServiceConfig,
  queue: Queue<JobData, StoredResult>,
  pools: PoolSet,
): (job: Job<JobData, StoredResult>, token?: string) => Promise<StoredResult> {
  const { options, lockDurationMs } = context;
  const { connection, prefix, logger, keyring } = options;
  const deliver = createDeliveryProcessor({
    service,
    breaker: context.breakers.get(service.name, breakerOptionsOf(service)),
    secrets: options.secrets,
    scrubber: context.scrubber,
    keyring,
    pools,
    tokens: context.tokens,
    clock: context.clock,
    queue,
    connection,
    writer: context.writer,
    logger,
    emit: context.emit,
    events: createJobEventPublisher({
      connection,
      keys: { events: queue.toKey('events'), meta: queue.toKey('meta') },
      logger,
    }),
    random: context.random,
    lockDurationMs,
    shutdownSignal: context.shutdownSignal,
    fallbacks: context.fallbacks,
    followUps: context.followUps,
    tenantLeases:
      service.tenantConcurrency === undefined
        ? undefined
        : createTenantLeases({
            connection,
            prefix,
            service: service.name,
            limit: service.tenantConcurrency,
            logger,
          }),
  });
  const { schedules, services } = options.config;
  const tickDeps = { connection, prefix, service: service.name, queue, logger, schedules, services, keyring };
  return (job, token) =>
    isScheduleTick(job) ? runScheduleTick(job, tickDeps).then(encodeStoredResult) : deliver(job, token);
}

function createWorker(
  context: PoolContext,
  service: ServiceConfig,
  processor: (job: Job<JobData, StoredResult>, token?: string) => Promise<StoredResult>,
): TrackedWorker {
  const { options } = context;
  const worker = new TrackedWorker(serviceQueueName(service.name), processor, {
    connection: options.connection,
    prefix: options.prefix,
    autorun: false,
    concurrency: service.concurrency,
    lockDuration: context.lockDurationMs,
    stalledInterval: options.stalledIntervalMs ?? WORKER_POOL_DEFAULTS.stalledIntervalMs,
    maxStalledCount: options.maxStalledCount ?? WORKER_POOL_DEFAULTS.maxStalledCount,
    removeOnComplete: {
      age: Math.ceil((options.keepCompletedMs ?? WORKER_POOL_DEFAULTS.keepCompletedMs) / SECOND),
    },
    // Never `removeOnFail: true` (DESIGN §8): the sweep must find failed jobs to check their dead letters.
    removeOnFail: { age: Math.ceil((options.keepFailedMs ?? WORKER_POOL_DEFAULTS.keepFailedMs) / SECOND) },
    // While a hold lasts (breaker open, Retry-After) each worker wakes every second and asks Redis again
    // (moveToActive takes no job while the queue's limiter key lives): one cheap call, and when an operator
    // closes the breaker (src/ops/breaker-control.ts deletes the limiter key) every worker resumes within
    // about a second instead of sleeping out the rest of the hold (issue 5).
    maximumRateLimitDelay: SECOND,
    // No BullMQ `metrics`: they cost two more Redis commands in the script that finishes every job (issue 20),
    // and `ferry status` counts its last hour in the completed and failed sets instead (src/ops/status.ts).
  });
  worker.on('error', (error) => options.logger.error({ service: service.name, err: error }, 'worker error'));
  return worker;
}

/**
 * A job that stalls too often is failed by BullMQ without calling the processor, so it never reaches our
 * dead-letter write. Check a stalled job's state at once (BullMQ 6.7 fails it when it is next fetched, and
 * that worker's 'failed' handler checks again) rather than waiting for the periodic sweep.
 */
function checkJobsFailedOutsideTheProcessor(context: PoolContext, runtime: ServiceRuntime): void {
  const { logger } = context.options;
  const service = runtime.service.name;
  const check = (jobId: string): void => {
    sweepOne(context, runtime, jobId).catch((error: unknown) =>
      logger.error({ service, jobId, err: error }, 'dead-letter sweep failed'),
    );
  };
  runtime.worker.on('stalled', (jobId) => {
    logger.warn({ service, jobId }, 'job stalled');
    check(jobId);
  });
  runtime.worker.on('failed', (job) => {
    // Anything else that failed outside the processor's own dead-letter write.
    if (job?.id !== undefined && job.data?.ferry?.final === undefined) check(job.id);
  });
}

/** Writes the dead letter of one job if it is in the failed set without one. */
async function sweepOne(context: PoolContext, runtime: ServiceRuntime, jobId: string): Promise<void> {
  const { connection, logger } = context.options;
  const failedAt = await connection.zscore(runtime.queue.toKey('failed'), jobId);
  if (failedAt === null) return; // stalled and taken again, or not failed at all
  const { service, queue, reaction } = runtime;
  if (await reconcileJob(service.name, queue, jobId, context.writer, context.clock.now(), reaction))
    logger.warn({ service: service.name, jobId }, 'dead-lettered a job BullMQ failed without running it');
}

/** Sweeps each service's failed set for jobs without a dead letter; the number of dead letters written. */
export async function sweepAll(context: PoolContext, runtimes: readonly ServiceRuntime[]): Promise<number> {
  const { logger } = context.options;
  let written = 0;
  for (const runtime of runtimes) {
    const startedAt = context.clock.now();
    // Overlap the previous window: a job can finish just as the last sweep read the set.
    const since = runtime.lastSweepMs === 0 ? 0 : runtime.lastSweepMs - MINUTE;
    const { service, queue, reaction } = runtime;
    const result = await sweepFailed(
      service.name,
      queue,
      context.writer,
      since,
      context.clock.now(),
      reaction,
    );
    runtime.lastSweepMs = startedAt;
    for (const id of result.written)
      logger.warn(
        { service: service.name, jobId: id },
        'sweep dead-lettered a failed job that had no dead letter',
      );
    written += result.written.length;
  }
  return written;
}
