/**
 * One BullMQ Worker per service, each with its own undici pool and breaker. Only this module knows BullMQ's
 * Worker; it installs no signal handlers (cli/ does) and never exits the process.
 */

import { type Job, MetricsTime, Queue, UnrecoverableError, Worker } from 'bullmq';

import {
  type BreakerOptions,
  type BreakerRegistry,
  createBreakerRegistry,
  type ServiceBreaker,
} from '../breakers/index.ts';
import { Deadline, forceCloseBull, settleWithin } from '../core/deadline.ts';
import type { DeliveryEventMap, DeliveryEventName } from '../core/delivery-events.ts';
import type { JobData, JobResult } from '../core/job.ts';
import type { Logger } from '../core/logger.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import type { Keyring } from '../core/sealed-data.ts';
import type { ServiceConfig, ServicesConfig } from '../core/services/types.ts';
import { type Clock, DAY, MINUTE, SECOND, systemClock } from '../core/time.ts';
import { type DeadLetterReaction, reconcileJob, sweepFailed } from '../dead-letter/reconciler.ts';
import { enforceRetention, type RetentionOptions } from '../dead-letter/retention.ts';
import { DeadLetterWriter } from '../dead-letter/writer.ts';
import type { SecretResolver } from '../secrets/resolver.ts';
import { Scrubber } from '../secrets/scrub.ts';
import { createDeliveryProcessor } from './delivery.ts';
import { createFallbackRouter } from './fallback-route.ts';
import { FollowUps } from './follow-ups.ts';
import { egressScopeOf } from './http/egress.ts';
import { TokenCache } from './http/oauth2.ts';
import { PoolSet } from './http/pools.ts';
import { observeProxyEnv, type ProxyEnv } from './http/transport.ts';
import { createJobEventPublisher } from './job-event-publisher.ts';
import { isScheduleTick, runScheduleTick, syncSchedules } from './schedules.ts';
import { TargetQueues } from './target-queues.ts';
import { createTenantLeases } from './tenant-leases.ts';

export interface WorkerPoolOptions {
  config: ServicesConfig;
  /** Services to work on; default all in the config. */
  services?: readonly string[];
  /** Shared non-blocking connection (worker role: `maxRetriesPerRequest: null`); BullMQ duplicates it for blocking reads. */
  connection: RedisClient;
  prefix: string;
  secrets: SecretResolver;
  /** FERRY_SECRETS_KEY's keyring: opens and seals the jobs of sensitive operations (required when any exists). */
  keyring?: Keyring | undefined;
  /**
   * Collects every secret value and token the pool hands out, and scrubs them from what it stores; share the
   * process's, so its log lines are scrubbed too. Default: the pool's own.
   */
  scrubber?: Scrubber;
  logger: Logger;
  clock?: Clock;
  random?: () => number;
  /** How long a job's lock lasts without renewal; a crashed worker's jobs are taken again after about this. Default 30 s. */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for. Default 30 s. */
  stalledIntervalMs?: number;
  /** Stalls before BullMQ fails a job (the sweep then dead-letters it). Default 5: one crash must not dead-letter a job. */
  maxStalledCount?: number;
  /** How often failed sets are swept for jobs without a dead letter. Default 30 s. */
  sweepIntervalMs?: number;
  /** Dead-letter retention enforced on every sweep interval (dead-letter/retention.ts). Default: none. */
  deadLetterRetention?: Pick<RetentionOptions, 'maxAgeMs' | 'maxCount'>;
  /** How long completed jobs are kept (and so how long an idempotency key deduplicates). Default 24 h. */
  keepCompletedMs?: number;
  /** How long failed jobs stay on their service queue (their dead letter stays until purged). Default 7 days. */
  keepFailedMs?: number;
  /** Longest chain of onFailure/`then` follow-ups from one producer's job. Default 16 (DEFAULT_MAX_CHAIN_DEPTH). */
  maxChainDepth?: number;
  /**
   * HTTPS_PROXY / HTTP_PROXY / NO_PROXY (readProxyEnv of the process env, at start): services without `proxy:`
   * and the OAuth2 token requests go through it. Default: none (direct).
   */
  proxyEnv?: ProxyEnv;
}

/** A rate-limit maximum for services without one: other processes honour a hold only when the queue has one (DESIGN §8). */
const UNLIMITED_RATE = { max: 1_000_000_000, perMs: SECOND };
const RATE_LIMIT_REAPPLY_MS = 5 * MINUTE;
/** Default grace of in-flight calls on close (FERRY_SHUTDOWN_TIMEOUT_MS). */
export const DEFAULT_SHUTDOWN_GRACE_MS = 5 * SECOND;
/** Default time aborted runs get to be recorded and handed back (FERRY_SHUTDOWN_HANDBACK_MS). */
export const DEFAULT_SHUTDOWN_HANDBACK_MS = 3 * SECOND;
/** Redis is taken for unreachable when a PING gets no answer within this. */
const PROBE_TIMEOUT_MS = SECOND;
const PROBE_INTERVAL_MS = 250;
/**
 * Once Redis was found unreachable, how long aborted runs still get to hand their jobs back (a Redis that was
 * only slow answers within it); nothing else is waited for.
 */
const UNREACHABLE_HANDBACK_MS = SECOND;
/** What force-closing BullMQ's own connections and the rest may take: they only disconnect sockets. */
const FORCE_CLOSE_WAIT_MS = 500;
/** Job ids listed in the log line about unrecorded results (the count is always whole). */
const LOGGED_JOB_IDS = 20;

/**
 * KEYS[1] a queue's limiter key. Deletes it only while it holds the queue (`queue.rateLimit` stores
 * Number.MAX_SAFE_INTEGER there): the same key counts the service's own rate limit, whose window a breaker
 * close must not reset.
 */
const END_HOLD_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

function longestTimeoutMs(service: ServiceConfig): number {
  let longest = service.timeoutMs;
  for (const operation of service.operations.values()) longest = Math.max(longest, operation.timeoutMs);
  return longest;
}

/** A service's breaker options, the same in every process (and for a fallback this process only reads). */
function breakerOptionsOf(service: ServiceConfig): BreakerOptions {
  return {
    ...service.breaker,
    // The probe is one call: its lock must outlive the slowest operation, or a second process probes too.
    probeTimeoutMs: Math.max(30 * SECOND, longestTimeoutMs(service) + 5 * SECOND),
  };
}

interface ServiceRuntime {
  service: ServiceConfig;
  queue: Queue<JobData, JobResult>;
  worker: TrackedWorker;
  pools: PoolSet;
  lastSweepMs: number;
  /** The onFailure follow-ups of the dead letters the sweep writes. */
  reaction: DeadLetterReaction;
}

/**
 * A BullMQ Worker that knows which jobs it is running: a job is in flight from the moment it is taken until
 * BullMQ has recorded its outcome in Redis (completed, failed, delayed or put back), which is when processJob
 * settles. What is still in flight when a shutdown gives up was not recorded, and will run again.
 */
class TrackedWorker extends Worker<JobData, JobResult> {
  readonly inFlight = new Set<Job<JobData, JobResult>>();
  #idle: (() => void) | undefined;

  override async processJob(
    job: Job<JobData, JobResult>,
    token: string,
    fetchNextCallback?: () => boolean,
  ): Promise<void | Job<JobData, JobResult>> {
    this.inFlight.add(job);
    try {
      return await super.processJob(job, token, fetchNextCallback);
    } finally {
      this.inFlight.delete(job);
      if (this.inFlight.size === 0) this.#idle?.();
    }
  }

  /**
   * A job with a `repeatJobKey` but no `repeat` options (anyone can add one: `queue.add(name, data, { jobId,
   * repeatJobKey })`) makes BullMQ throw while taking it (upsertJobScheduler reads `opts.repeat.every`); it then
   * drops the job without failing it, so it stays active, stalls back to wait and is taken again, forever: never
   * run, never dead-lettered, two error lines each time. Such a job is failed here instead (the dead-letter sweep
   * then writes its dead letter). Ticks of Ferry's schedulers carry `repeat` and are taken as before.
   */
  protected override async nextJobFromJobData(
    jobData?: Parameters<Worker['createJob']>[0],
    jobId?: string,
    token?: string,
  ): Promise<Job<JobData, JobResult>> {
    if (jobData !== undefined && jobId !== undefined && token !== undefined) {
      const job = this.createJob(jobData, jobId);
      if (
        job.repeatJobKey !== undefined &&
        !job.repeatJobKey.includes(':') &&
        (job.opts as { repeat?: unknown }).repeat === undefined
      ) {
        job.token = token;
        await job.moveToFailed(
          new UnrecoverableError('the job names a job scheduler (repeatJobKey) but has no repeat options'),
          token,
          false,
        );
        return undefined as unknown as Job<JobData, JobResult>;
      }
    }
    return super.nextJobFromJobData(jobData, jobId, token);
  }

  /** Resolves once nothing is in flight. */
  whenIdle(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#idle;
      this.#idle = () => {
        this.#idle = undefined;
        previous?.();
        resolve();
      };
    });
  }
}

/** What close() could not finish. */
export interface PoolCloseReport {
  /**
   * Jobs taken by this pool whose outcome was not recorded in Redis when close() gave up (Redis unreachable, or
   * the hand-back took longer than allowed). Nothing is lost: each stays active in Redis until its lock expires,
   * then runs again (at-least-once, with the same Idempotency-Key).
   */
  unrecorded: { service: string; jobId: string }[];
  /** Whether Redis answered when close() ended. */
  redisReachable: boolean;
}

export interface WorkerPool {
  readonly breakers: BreakerRegistry;
  /** The `{dead-letter}` queue writer (reads too: `get(deadLetterId)`). */
  readonly deadLetters: DeadLetterWriter;
  readonly services: readonly string[];
  /** Applies queue settings, sweeps failed sets once, then starts taking jobs. */
  start(): Promise<void>;
  /**
   * Stops taking jobs and waits for in-flight ones up to `deadlineMs` (default 5 s); past it, in-flight calls
   * are aborted and their jobs put back (recorded as interrupted, no attempt used), for up to `handbackMs`
   * (default 3 s) more. When Redis does not answer, nothing can be recorded: calls are aborted at once and
   * close() ends within about three seconds. Always resolves within `deadlineMs + handbackMs` plus half a
   * second, whatever Redis does. Idempotent.
   */
  close(options?: { deadlineMs?: number; handbackMs?: number }): Promise<void>;
  /** close(), saying what it could not record (the CLI's exit code and log line come from it). */
  shutdown(options?: { deadlineMs?: number; handbackMs?: number }): Promise<PoolCloseReport>;
  /** Sweeps every service's failed set now (tests, ops). */
  sweep(): Promise<number>;
  on<E extends DeliveryEventName>(event: E, listener: (payload: DeliveryEventMap[E]) => void): WorkerPool;
  off<E extends DeliveryEventName>(event: E, listener: (payload: DeliveryEventMap[E]) => void): WorkerPool;
}

export function createWorkerPool(options: WorkerPoolOptions): WorkerPool {
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const { logger, prefix, connection } = options;
  const lockDurationMs = options.lockDurationMs ?? 30 * SECOND;
  const names = options.services ?? [...options.config.services.keys()];
  for (const name of names) {
    if (!options.config.services.has(name))
      throw new Error(`unknown service "${name}" (not in the services file)`);
  }
  const scrubber = options.scrubber ?? new Scrubber();
  const writer = new DeadLetterWriter({ connection, prefix });
  // One per pool: every service's oauth2 tokens, each handed to the scrubber as it arrives.
  if (options.proxyEnv !== undefined) observeProxyEnv(options.proxyEnv, scrubber);
  const tokens = new TokenCache({ observer: scrubber, clock, proxyEnv: options.proxyEnv });
  const breakers = createBreakerRegistry({
    redis: connection,
    keyFor: (name) => `${prefix}:${serviceQueueName(name)}:breaker`,
  });
  breakers.on('breaker:sync:error', (event) => {
    logger.error(
      { service: event.name, operation: event.operation, err: event.error },
      'breaker could not sync its state with Redis',
    );
  });
  breakers.on('breaker:state:changed', (change) => {
    logger.warn(
      { service: change.name, from: change.from.state, to: change.to.state, source: change.source },
      `breaker ${change.to.state}`,
    );
  });
  // A listener's bug must never reach delivery: a throw from here would be taken for a failure to record the
  // outcome, and the job would run again. Every listener runs; errors are logged.
  // Listener lists are replaced, never mutated, on on/off: emit walks the current one without copying it (an
  // EventEmitter's listeners() copies on every call, and metrics listen to every completed job).
  const listeners = new Map<DeliveryEventName, readonly ((payload: never) => void)[]>();
  const emit = <E extends DeliveryEventName>(event: E, payload: DeliveryEventMap[E]): void => {
    const list = listeners.get(event);
    if (list === undefined) return;
    for (const listener of list) {
      try {
        (listener as (payload: DeliveryEventMap[E]) => void)(payload);
      } catch (error) {
        logger.error({ event, err: error }, 'delivery event listener threw');
      }
    }
  };

  // Aborted when the shutdown deadline passes: every in-flight call of every service stops and its job is put
  // back. One signal for the pool rather than BullMQ's one per job (see DeliveryProcessor); calls follow it
  // through one listener per signal (see callDownstream).
  const shutdown = new AbortController();

  // Fallback routing (fallback-route.ts) reads each fallback's breaker from this registry: registered now, for
  // fallbacks this pool does not serve too, so their first read of the shared state is done before work starts.
  const fallbackBreakers = new Map<string, ServiceBreaker>();
  for (const name of names) {
    const fallback = options.config.services.get(options.config.services.get(name)!.fallback ?? '');
    if (fallback !== undefined && !fallbackBreakers.has(fallback.name))
      fallbackBreakers.set(fallback.name, breakers.get(fallback.name, breakerOptionsOf(fallback)));
  }
  // The queues fallback moves and follow-ups add to (any service's, also those this pool does not work on).
  const targetQueues = new TargetQueues({ connection, prefix });
  const fallbacks = createFallbackRouter({
    config: options.config,
    queues: targetQueues,
    breakerOf: (name) => fallbackBreakers.get(name),
    keyring: options.keyring,
  });
  // onFailure and `then` follow-ups.
  const followUps = new FollowUps({
    config: options.config,
    queues: targetQueues,
    logger,
    emit,
    ...(options.maxChainDepth === undefined ? {} : { maxChainDepth: options.maxChainDepth }),
    keyring: options.keyring,
  });

  const runtimes: ServiceRuntime[] = names.map((name) => {
    const service = options.config.services.get(name)!;
    const queueName = serviceQueueName(name);
    const queue = new Queue<JobData, JobResult>(queueName, { connection, prefix });
    const pools = new PoolSet({
      connections: service.concurrency,
      egress: egressScopeOf(service),
      proxyEnv: options.proxyEnv,
      scrubber,
    });
    const deliver = createDeliveryProcessor({
      service,
      breaker: breakers.get(name, breakerOptionsOf(service)),
      secrets: options.secrets,
      scrubber,
      keyring: options.keyring,
      pools,
      tokens,
      clock,
      queue: queue as unknown as Queue<JobData>,
      writer,
      logger,
      emit,
      events: createJobEventPublisher({
        connection,
        keys: { events: queue.toKey('events'), meta: queue.toKey('meta') },
        logger,
      }),
      random,
      lockDurationMs,
      shutdownSignal: shutdown.signal,
      fallbacks,
      followUps,
      tenantLeases:
        service.tenantConcurrency === undefined
          ? undefined
          : createTenantLeases({
              connection,
              prefix,
              service: name,
              limit: service.tenantConcurrency,
              logger,
            }),
    });
    // A schedule's tick is not delivered: it adds the schedule's run (worker/schedules.ts).
    const tickDeps = {
      connection,
      prefix,
      service: name,
      queue: queue as unknown as Queue,
      logger,
      schedules: options.config.schedules,
      services: options.config.services,
      keyring: options.keyring,
    };
    const processor = (job: Job<JobData, JobResult>, token?: string): Promise<JobResult> =>
      isScheduleTick(job) ? runScheduleTick(job, tickDeps) : deliver(job, token);
    const worker = new TrackedWorker(queueName, processor, {
      connection,
      prefix,
      autorun: false,
      concurrency: service.concurrency,
      lockDuration: lockDurationMs,
      stalledInterval: options.stalledIntervalMs ?? 30 * SECOND,
      maxStalledCount: options.maxStalledCount ?? 5,
      removeOnComplete: { age: Math.ceil((options.keepCompletedMs ?? DAY) / SECOND) },
      // Never `removeOnFail: true` (DESIGN §8): the sweep must find failed jobs to check their dead letters.
      removeOnFail: { age: Math.ceil((options.keepFailedMs ?? 7 * DAY) / SECOND) },
      // While a hold lasts (breaker open, Retry-After) each worker wakes every second and asks Redis again
      // (moveToActive takes no job while the queue's limiter key lives): one cheap call, and when an operator
      // closes the breaker (src/ops/breaker-control.ts deletes the limiter key) every worker resumes within
      // about a second instead of sleeping out the rest of the hold (issue 5).
      maximumRateLimitDelay: SECOND,
      // Completed and failed per minute, kept a week: `ferry status` shows the last hour (queue.getMetrics).
      metrics: { maxDataPoints: MetricsTime.ONE_WEEK },
    });
    worker.on('error', (error) => logger.error({ service: name, err: error }, 'worker error'));
    // A job that stalls too often is failed by BullMQ without calling the processor, so it never reaches our
    // dead-letter write. Check a stalled job's state at once (BullMQ 6.7 fails it when it is next fetched, and
    // that worker's 'failed' handler checks again) rather than waiting for the periodic sweep.
    worker.on('stalled', (jobId) => {
      logger.warn({ service: name, jobId }, 'job stalled');
      sweepOne(runtime, jobId).catch((error: unknown) =>
        logger.error({ service: name, jobId, err: error }, 'dead-letter sweep failed'),
      );
    });
    worker.on('failed', (job) => {
      // Anything else that failed outside the processor's own dead-letter write.
      if (job?.id !== undefined && job.data?.ferry?.final === undefined) {
        sweepOne(runtime, job.id).catch((error: unknown) =>
          logger.error({ service: name, jobId: job.id, err: error }, 'dead-letter sweep failed'),
        );
      }
    });
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
    return runtime;
  });

  // A breaker hold is tied to the breaker's record, not to a timer: when this process learns that the breaker
  // closed (the record is gone: `ferry breakers close`, a probe that succeeded, the record's expiry), it ends
  // the queue's hold at once. A worker that held the queue from a view older than the close (issue 13) thus
  // releases its own hold within one sync interval; delivery.ts re-checks right after applying a hold, for a
  // close learned while it was being applied, and holds in slices so a hold whose worker died ends anyway.
  breakers.on('breaker:state:changed', (change) => {
    if (change.to.state !== 'closed' || change.from.state === 'closed') return;
    // The closed service's own hold, and the holds of services whose breaker is open and which fall back to it
    // (held because both were open): their jobs can be routed again now, not only once the hold's slice ends.
    const open = new Set(
      breakers.list().flatMap(({ name, state }) => (state.state === 'closed' ? [] : [name])),
    );
    for (const runtime of runtimes) {
      const { service } = runtime;
      if (service.name !== change.name && !(service.fallback === change.name && open.has(service.name)))
        continue;
      connection
        .eval(END_HOLD_SCRIPT, 1, runtime.queue.toKey('limiter'), String(Number.MAX_SAFE_INTEGER))
        .catch((error: unknown) =>
          logger.error({ service: service.name, err: error }, 'could not end the hold of a closed breaker'),
        );
    }
  });

  /** Writes the dead letter of one job if it is in the failed set without one. */
  async function sweepOne(runtime: ServiceRuntime, jobId: string): Promise<void> {
    const failedAt = await connection.zscore(runtime.queue.toKey('failed'), jobId);
    if (failedAt === null) return; // stalled and taken again, or not failed at all
    if (
      await reconcileJob(
        runtime.service.name,
        runtime.queue as unknown as Queue<JobData>,
        jobId,
        writer,
        clock.now(),
        runtime.reaction,
      )
    ) {
      logger.warn(
        { service: runtime.service.name, jobId },
        'dead-lettered a job BullMQ failed without running it',
      );
    }
  }

  async function sweepAll(): Promise<number> {
    let written = 0;
    for (const runtime of runtimes) {
      const startedAt = clock.now();
      // Overlap the previous window: a job can finish just as the last sweep read the set.
      const since = runtime.lastSweepMs === 0 ? 0 : runtime.lastSweepMs - MINUTE;
      const result = await sweepFailed(
        runtime.service.name,
        runtime.queue as unknown as Queue<JobData>,
        writer,
        since,
        clock.now(),
        runtime.reaction,
      );
      runtime.lastSweepMs = startedAt;
      for (const id of result.written)
        logger.warn(
          { service: runtime.service.name, jobId: id },
          'sweep dead-lettered a failed job that had no dead letter',
        );
      written += result.written.length;
    }
    return written;
  }

  async function applyRateLimits(): Promise<void> {
    for (const { service, queue } of runtimes) {
      const limit = service.rateLimit ?? UNLIMITED_RATE;
      await queue.setGlobalRateLimit(limit.max, limit.perMs);
    }
  }

  const timers: NodeJS.Timeout[] = [];
  let closing: Promise<PoolCloseReport> | undefined;

  const inFlightCount = (): number => runtimes.reduce((n, { worker }) => n + worker.inFlight.size, 0);

  /**
   * Watches whether Redis answers while the pool closes: a connection that is not ready (Redis gone) or a PING
   * unanswered within PROBE_TIMEOUT_MS (Redis paused or hung) is unreachable. `lost` resolves at the first sign.
   */
  function watchRedis(): { readonly reachable: boolean; lost: Promise<void>; stop(): void } {
    let stopped = false;
    let reachable = true;
    let timer: NodeJS.Timeout | undefined;
    let wake: (() => void) | undefined;
    const answers = async (): Promise<boolean> => {
      if (connection.status !== 'ready') return false;
      let probe: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([
          connection.ping().then(
            () => true,
            () => false,
          ),
          new Promise<boolean>((resolve) => {
            probe = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS);
          }),
        ]);
      } finally {
        clearTimeout(probe);
      }
    };
    const lost = new Promise<void>((resolve) => {
      void (async () => {
        while (!stopped) {
          if (!(await answers()) && !stopped) {
            reachable = false;
            resolve();
            return;
          }
          await new Promise<void>((next) => {
            wake = next;
            timer = setTimeout(next, PROBE_INTERVAL_MS);
          });
        }
        // Stopped: `lost` never resolves; a watcher that is not watching has lost nothing.
      })();
    });
    return {
      get reachable() {
        return reachable;
      },
      lost,
      stop() {
        stopped = true;
        clearTimeout(timer);
        wake?.();
      },
    };
  }

  /** Until nothing is in flight, `ms` passed, or Redis was found unreachable, whichever comes first. */
  async function waitForInFlight(
    ms: number,
    lost: Promise<void>,
  ): Promise<'drained' | 'timeout' | 'unreachable'> {
    if (inFlightCount() === 0) return 'drained';
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        Promise.all(runtimes.map(({ worker }) => worker.whenIdle())).then(() => 'drained' as const),
        lost.then(() => 'unreachable' as const),
        new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), Math.max(0, ms));
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  const pool: WorkerPool = {
    breakers,
    deadLetters: writer,
    services: names,
    async start() {
      await applyRateLimits();
      const schedules = await syncSchedules({
        connection,
        prefix,
        config: options.config,
        queues: new Map(runtimes.map(({ service, queue }) => [service.name, queue as unknown as Queue])),
        logger,
      });
      if (options.config.schedules.size > 0 || schedules.removed.length > 0)
        logger.info({ schedules }, 'schedules synced with the services file');
      for (const { worker } of runtimes) {
        worker.run().catch((error: unknown) => logger.error({ err: error }, 'worker stopped with an error'));
      }
      // The first sweep reads the whole failed set (days of failures): in the background, not before work starts.
      sweepAll().catch((error: unknown) => logger.error({ err: error }, 'dead-letter sweep failed'));
      const every = (ms: number, task: () => Promise<unknown>, what: string): void => {
        const timer = setInterval(() => {
          task().catch((error: unknown) => logger.error({ err: error }, `${what} failed`));
        }, ms);
        timer.unref();
        timers.push(timer);
      };
      // Rate-limit settings live in Redis and are lost with its data: re-apply them (DESIGN §8).
      every(RATE_LIMIT_REAPPLY_MS, applyRateLimits, 'rate-limit re-apply');
      every(options.sweepIntervalMs ?? 30 * SECOND, sweepAll, 'dead-letter sweep');
      const retention = options.deadLetterRetention;
      if (retention !== undefined) {
        const enforce = () => enforceRetention({ connection, prefix }, { ...retention, now: clock.now });
        every(options.sweepIntervalMs ?? 30 * SECOND, enforce, 'dead-letter retention');
      }
      logger.info({ services: names, prefix }, 'worker pool started');
    },
    async close(options) {
      await pool.shutdown(options);
    },
    shutdown({ deadlineMs = DEFAULT_SHUTDOWN_GRACE_MS, handbackMs = DEFAULT_SHUTDOWN_HANDBACK_MS } = {}) {
      closing ??= (async (): Promise<PoolCloseReport> => {
        for (const timer of timers) clearInterval(timer);
        const end = new Deadline(deadlineMs + handbackMs);
        // Stop taking jobs. Never awaited unbounded: BullMQ's close waits for its blocking connection's `end`,
        // which a connection that is reconnecting never emits (BullMQ #4585), so it hangs while Redis is down.
        const stopping = Promise.all(runtimes.map(({ worker }) => worker.close()));
        stopping.catch(() => undefined);
        const redis = watchRedis();
        let waited = await waitForInFlight(deadlineMs, redis.lost);
        if (waited !== 'drained') {
          logger.warn(
            { deadlineMs, inFlight: inFlightCount() },
            waited === 'unreachable'
              ? 'Redis is unreachable: no result can be recorded; aborting in-flight calls now'
              : 'shutdown deadline passed; aborting in-flight calls and putting their jobs back',
          );
          shutdown.abort('shutdown');
          // Each aborted run records itself as interrupted and puts its job back (no attempt used): that needs
          // Redis. Without it there is nothing to wait for but a Redis that was only slow.
          waited =
            waited === 'unreachable'
              ? await waitForInFlight(UNREACHABLE_HANDBACK_MS, new Promise(() => undefined))
              : await waitForInFlight(Math.min(handbackMs, end.left()), redis.lost);
        }
        const unrecorded = runtimes.flatMap(({ service, worker }) =>
          [...worker.inFlight].map((job) => ({ service: service.name, jobId: job.id ?? '' })),
        );
        // The rest waits for Redis only while it answers (the watch goes on): the moment it is found
        // unreachable there is nothing left to wait for.
        const whileReachable = (promise: Promise<unknown>): Promise<unknown> =>
          Promise.race([promise, redis.lost]);
        // BullMQ's connections: closed gracefully while Redis answers and time is left, else force-closed.
        const graceful =
          redis.reachable && unrecorded.length === 0
            ? await settleWithin(whileReachable(stopping), end.left(FORCE_CLOSE_WAIT_MS))
            : 'timeout';
        const forced = graceful === 'timeout' || !redis.reachable;
        const rest = Promise.all([
          ...(forced ? runtimes.map(({ worker }) => forceCloseBull(worker, FORCE_CLOSE_WAIT_MS)) : []),
          ...runtimes.map(({ queue }) => queue.close()),
          ...runtimes.map(({ pools }) => pools.close()),
          targetQueues.close(),
          tokens.close(),
          writer.close(),
          breakers.close(),
        ]);
        // Forced, everything left shares one short wait: the whole close stays within its budget plus that.
        const restWait = forced ? FORCE_CLOSE_WAIT_MS : end.left(FORCE_CLOSE_WAIT_MS);
        if ((await settleWithin(whileReachable(rest), restWait)) === 'timeout' || !redis.reachable)
          logger.warn('queues and connections did not close in time; leaving them to the process exit');
        const reachable = redis.reachable;
        redis.stop();
        if (unrecorded.length > 0) {
          logger.error(
            {
              unrecorded: unrecorded.length,
              jobs: unrecorded.slice(0, LOGGED_JOB_IDS),
              redisReachable: reachable,
            },
            `results of ${unrecorded.length} in-flight job(s) were not recorded` +
              `${reachable ? '' : ' (Redis unreachable)'}; ` +
              'they will run again once their locks expire, with the same Idempotency-Key',
          );
        }
        logger.info('worker pool closed');
        return { unrecorded, redisReachable: reachable };
      })();
      return closing;
    },
    sweep: sweepAll,
    on(event, listener) {
      listeners.set(event, [...(listeners.get(event) ?? []), listener]);
      return pool;
    },
    off(event, listener) {
      const list = listeners.get(event) ?? [];
      const index = list.indexOf(listener);
      if (index < 0) return pool;
      const rest = [...list.slice(0, index), ...list.slice(index + 1)];
      if (rest.length === 0) listeners.delete(event);
      else listeners.set(event, rest);
      return pool;
    },
  };
  return pool;
}
