/**
 * Applies the delivery policy's decision about a run to BullMQ: the decision itself is made by the pure
 * `decide` (src/core/delivery-policy.ts); this module only performs its side effects (persist Ferry's state,
 * move the job, write the dead letter, events, logs). Ferry owns the retry policy (DESIGN §8): a raw
 * producer's job has BullMQ's default `attempts: 1`, and BullMQ's own backoff has no cap. So a retry is `moveToDelayed` +
 * DelayedError (BullMQ's attemptsMade does not grow), a hold is `queue.rateLimit` + RateLimitError (the job
 * goes back to the front and no worker in any process takes the queue's jobs until the wait ends), and a dead
 * letter is written *before* UnrecoverableError moves the job to failed, so no job ends failed without one.
 */
import { DelayedError, type Job, type Queue, RateLimitError, UnrecoverableError } from 'bullmq';

import type { DeliveryEventListener } from '../core/delivery-events.ts';
import {
  decide,
  type Decision,
  type DeliveryOutcome,
  type DeliveryPolicy,
  deliveryPolicyOf,
  requestedHoldMs,
} from '../core/delivery-policy.ts';
import { ConfigurationError, type FerryError, toErrorRecord } from '../core/errors.ts';
import { formatFailedReason } from '../core/failed-reason.ts';
import {
  type AttemptRecord,
  type DeliveryState,
  issuePath,
  type JobData,
  type JobRef,
  type JobResult,
  usedAttempts,
} from '../core/job.ts';
import { HELD_STREAM_EVENT, RETRYING_STREAM_EVENT } from '../core/job-events.ts';
import type { Logger } from '../core/logger.ts';
import { deadLetterJobId, defaultIdempotencyKey } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import type { CompiledEnqueue, ServiceConfig } from '../core/services/types.ts';
import { storedDeliveryStateSchema, toStoredDeliveryState } from '../core/stored-history.ts';
import { encodeStoredResult, type StoredResult } from '../core/stored-result.ts';
import {
  deadLetterFromJob,
  type DeadLetterWriter,
  isDeadLettered,
  markDeadLettered,
} from '../dead-letter/writer.ts';
import { applyRoute, type FallbackRouter, persistedRouteProblem, type RoutedJob } from './fallback-route.ts';
import type { FollowUps } from './follow-ups.ts';
import { encodeStreamEvent, type JobEventPublisher } from './job-event-publisher.ts';
import { type AttemptJob, type AttemptOutcome, type ProcessorDeps, runAttempt } from './processor.ts';
import { holdQueue } from './queue-hold.ts';
import { recordRun, type RunRecord } from './record-run.ts';
import { createRetryAfterWarning } from './retry-after.ts';
import { isUnsealed, sealInPlace, sensitiveOperationsOf } from './sealed.ts';
import type { TraceIds } from './tracing.ts';

export interface DeliveryDeps extends ProcessorDeps {
  queue: Queue<JobData>;
  /** The pool's shared connection: applies holds (queue-hold.ts). */
  connection: RedisClient;
  writer: DeadLetterWriter;
  logger: Logger;
  emit: DeliveryEventListener;
  /** Ferry's retrying and held events on the queue's events stream (the API's SSE reads them). */
  events: JobEventPublisher;
  random: () => number;
  /** Lock duration of the worker, to re-check the lock before a dead letter is written. */
  lockDurationMs: number;
  /** Aborted (reason `shutdown`) when the worker pool's shutdown deadline passes: in-flight calls stop. */
  shutdownSignal?: AbortSignal;
  /** Moves a job to its service's fallback while the breaker is open (fallback-route.ts); absent: never routes. */
  fallbacks?: FallbackRouter;
  /** onFailure and `then` (follow-ups.ts). Without it, no reaction runs. */
  followUps?: FollowUps;
}

/** Not run: the outcome of a job whose state holds a dead letter an earlier run decided. */
const SKIPPED: DeliveryOutcome = Object.freeze({ kind: 'skipped' });

/**
 * Two parameters on purpose: BullMQ gives a processor that declares a third one an AbortController of its
 * own for every job, among the largest costs per job in Node 20 (bench/HISTORY.md, item 3). Cancellation on
 * shutdown comes from `deps.shutdownSignal`, one for the whole pool, instead (BullMQ's per-job signals only
 * served cancelAllJobs).
 */
export type DeliveryProcessor = (job: Job<JobData, StoredResult>, token?: string) => Promise<StoredResult>;

export function createDeliveryProcessor(deps: DeliveryDeps): DeliveryProcessor {
  const { service, logger } = deps;
  // The one log line every job writes skips pino's redaction, which costs more than the rest of the line: pino
  // runs every field through the wildcard `*.x` redactors, numbers and strings included. It could never change
  // this line: logAttempt writes only fixed keys (none named like a REDACT_PATHS entry) with primitive values,
  // and the error message in it is already scrubbed of secret values. Every other line keeps redaction.
  const attemptLogger = logger.child({}, { redact: [] });
  const signal = deps.shutdownSignal;
  // One policy per operation, built now: a job costs a Map lookup, not an object.
  const scrubText = scrub(deps);
  const policies = new Map<string, DeliveryPolicy>();
  for (const operation of service.operations.values())
    policies.set(operation.name, deliveryPolicyOf(service, operation, scrubText));
  const unknownOperationPolicy = deliveryPolicyOf(service, undefined, scrubText);
  // Sensitive operations (sealed input): undefined for a service without any, whose jobs pay one check.
  const sensitive = sensitiveOperationsOf(service);
  if (sensitive !== undefined && deps.keyring === undefined)
    throw new ConfigurationError(
      `service "${service.name}" has sensitive operations (sealed input): FERRY_SECRETS_KEY is not set`,
    );
  // One per service per process, so a flood of long Retry-Afters logs a line a minute, not one per job.
  const attemptDeps: ProcessorDeps = {
    ...deps,
    onRetryAfterClamped:
      deps.onRetryAfterClamped ??
      createRetryAfterWarning({
        service: service.name,
        maxRetryAfterMs: service.retry.maxRetryAfterMs,
        logger,
        now: () => deps.clock.now(),
      }),
  };
  return async (job, token) => {
    const jobId = job.id ?? '';
    const base = { service: service.name, operation: job.name, jobId, tenant: readTenant(job.data) };
    const read = readState(job.data);
    const { state } = read;
    // A persisted route that is not this job's own (job data is anyone's to write) is a malformed state.
    const problem =
      read.problem ??
      (state.routedTo === undefined
        ? undefined
        : persistedRouteProblem(service, routedJob(job), state.routedTo));
    const policy = policies.get(job.name) ?? unknownOperationPolicy;
    try {
      const stallsSeen = state.stallsSeen;
      recordStalls(job, state, base, deps);
      if (problem !== undefined || state.final !== undefined || state.routedTo !== undefined) {
        // No call: a malformed state, or a previous run decided to dead-letter or to route but died before the
        // job reached failed or completed (finish that; a route asks no breaker again).
        const decision = decide(
          problem === undefined ? SKIPPED : { kind: 'badState', problem },
          state,
          policy,
          deps.clock.now(),
          deps.random,
        );
        if (decision.kind === 'deadLetter') return await deadLetter(job, token, state, decision, deps, base);
        if (decision.kind === 'route' && decision.jobId !== undefined)
          return await route(
            job,
            token,
            state,
            { service: decision.service, jobId: decision.jobId },
            deps,
            base,
          );
        throw mismatch(decision, problem === undefined ? 'skipped' : 'badState');
      }
      if (sensitive?.has(job.name) === true && isUnsealed(job.data)) {
        // A raw producer's plaintext job of a sensitive operation: sealed in place before anything else, so
        // nothing Ferry writes from it (dead letter, follow-ups, moves) holds its input in plaintext.
        const sealed = sealInPlace(service, deps.keyring!, jobId, job.data);
        if (sealed !== undefined) {
          await assertOwned(job, token, deps);
          await job.updateData(sealed);
        }
      }
      const attempt = usedAttempts(state.attempts) + 1;
      const attemptJob: AttemptJob = {
        id: jobId,
        name: job.name,
        data: job.data,
        createdAt: job.timestamp,
        attempt,
        trace: undefined,
      };
      const outcome = await runAttempt(attemptJob, attemptDeps, signal);
      logAttempt(attemptLogger, base, attempt, outcome, attemptJob.trace);
      const decision = decide(
        withFallbackState(outcome, service, job, deps),
        state,
        policy,
        deps.clock.now(),
        deps.random,
      );
      switch (decision.kind) {
        case 'complete': {
          if (outcome.kind !== 'completed') throw mismatch(decision, outcome.kind);
          // The attempt's own result, completed in place: BullMQ's JSON.stringify of a spread copy costs about
          // twice as much. The keys come out in the same order (attempts last).
          const result = outcome.result as JobResult;
          result.attempts = attempt;
          if (decision.then !== undefined)
            await enqueueNext(
              job,
              token,
              state,
              result,
              decision.then,
              policy,
              attempt,
              outcome.durationMs,
              deps,
              base,
            );
          // Fields listed, not `{ ...base }`: in the bench's profile the spread cost ~6 µs on every job.
          deps.emit('job:attempt:completed', {
            service: base.service,
            operation: base.operation,
            jobId: base.jobId,
            tenant: base.tenant,
            attempt,
            durationMs: outcome.durationMs,
            result,
          });
          // What BullMQ stores (twice: the job hash and the stream's `completed` entry) is the compact form, which
          // its JSON.stringify writes faster than the object; listeners above got the JobResult.
          return encodeStoredResult(result);
        }
        case 'defer': {
          if (outcome.kind !== 'deferred') throw mismatch(decision, outcome.kind);
          // One Redis call (after a stall, first the state that records it): no attempt, no record, no event
          // on the stream. The job's slot goes to the next job at once, other tenants' jobs included.
          if (state.stallsSeen !== stallsSeen) await persistOwned(job, token, state, deps);
          await job.moveToDelayed(deps.clock.now() + decision.delayMs, token);
          deps.emit('job:run:deferred', { ...base, reason: outcome.reason, delayMs: decision.delayMs });
          throw new DelayedError();
        }
        case 'requeue': {
          state.attempts.push(
            record(
              attempt,
              'interrupted',
              deps,
              outcome.durationMs,
              undefined,
              'worker shut down during the call',
            ),
          );
          deps.emit('job:run:interrupted', { ...base, attempt, reason: 'shutdown' });
          await persistOwned(job, token, state, deps);
          await job.moveToDelayed(deps.clock.now(), token);
          throw new DelayedError();
        }
        case 'retry':
          if (outcome.kind !== 'failed' && outcome.kind !== 'held') throw mismatch(decision, outcome.kind);
          return await retry(
            job,
            token,
            state,
            outcome.error,
            decision,
            attempt,
            outcome.durationMs,
            deps,
            base,
          );
        case 'hold':
          if (outcome.kind !== 'failed' && outcome.kind !== 'held') throw mismatch(decision, outcome.kind);
          return await hold(
            job,
            token,
            state,
            outcome.error,
            decision,
            attempt,
            outcome.durationMs,
            deps,
            base,
          );
        case 'deadLetter': {
          if (outcome.kind !== 'failed' && outcome.kind !== 'held') throw mismatch(decision, outcome.kind);
          state.attempts.push(
            record(attempt, 'failed', deps, outcome.durationMs, outcome.error, decision.error.message),
          );
          return await deadLetter(job, token, state, decision, deps, base, attemptJob.trace);
        }
        case 'route': {
          if (outcome.kind !== 'held' || deps.fallbacks === undefined) throw mismatch(decision, outcome.kind);
          const routedTo = deps.fallbacks.plan(service, decision.service, routedJob(job));
          return await route(job, token, state, routedTo, deps, base);
        }
      }
    } catch (error) {
      if (
        error instanceof DelayedError ||
        error instanceof RateLimitError ||
        error instanceof UnrecoverableError ||
        error instanceof LostLockError
      )
        throw error;
      // Ferry could not record the outcome. Never fail the job for it: put it back to run again, with a
      // backoff, and a bound (the policy's). (A Redis that is really down cannot record anything: the job's
      // lock expires and BullMQ's stall handling takes over.)
      const message = error instanceof Error ? error.message : String(error);
      const decision = decide(
        { kind: 'internalError', message },
        state,
        policy,
        deps.clock.now(),
        deps.random,
      );
      const internalErrors = (state.internalErrors ?? 0) + 1;
      state.internalErrors = internalErrors;
      if (decision.kind === 'deadLetter') {
        logger.error({ ...base, err: error, internalErrors }, 'could not record the outcome of an attempt');
        return await deadLetter(job, token, state, decision, deps, base);
      }
      if (decision.kind !== 'retry') throw mismatch(decision, 'internalError');
      logger.error(
        { ...base, err: error, internalErrors, delayMs: decision.delayMs },
        'could not record the outcome of an attempt; the job will run again',
      );
      await persist(job, state).catch(() => undefined);
      await job.moveToDelayed(decision.nextAttemptAt, token);
      throw new DelayedError();
    }
  };
}

/** A failed attempt, run again later: recorded, then moveToDelayed + DelayedError. */
async function retry(
  job: Job<JobData, StoredResult>,
  token: string | undefined,
  state: DeliveryState,
  error: FerryError,
  decision: Extract<Decision, { kind: 'retry' }>,
  attempt: number,
  durationMs: number,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<never> {
  const errorRecord = toErrorRecord(error, scrub(deps));
  const { delayMs, nextAttemptAt } = decision;
  const run = record(attempt, 'failed', deps, durationMs, error, errorRecord.message, delayMs);
  state.attempts.push(run);
  // The state, the log line and the event in one round trip, only while this run holds the lock (record-run.ts).
  // The event goes out before the move: once the job is delayed, a short delay can make it active again at
  // once, and the stream must show why it went back before it shows the next run.
  await persistOwned(job, token, state, deps, {
    log: `attempt ${attempt} failed: ${formatFailedReason(errorRecord)}; retrying in ${delayMs} ms`,
    keepLogs: job.opts.keepLogs,
    event: encodeStreamEvent(RETRYING_STREAM_EVENT, {
      operation: base.operation,
      ...(base.tenant === undefined ? {} : { tenant: base.tenant }),
      attempt,
      at: run.at,
      durationMs,
      error: errorRecord,
      delayMs,
      nextAttemptAt,
    }),
  });
  await job.moveToDelayed(nextAttemptAt, token);
  deps.emit('job:attempt:retrying', {
    ...base,
    attempt,
    durationMs,
    error: errorRecord,
    delayMs,
    nextAttemptAt,
  });
  throw new DelayedError();
}

/** The whole service waits: the held time counted, then queue.rateLimit + RateLimitError. */
async function hold(
  job: Job<JobData, StoredResult>,
  token: string | undefined,
  state: DeliveryState,
  error: FerryError,
  decision: Extract<Decision, { kind: 'hold' }>,
  attempt: number,
  durationMs: number,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<never> {
  const errorRecord = toErrorRecord(error, scrub(deps));
  const { holdMs, queueHoldMs, reason, until } = decision;
  const isBreakerHold = reason === 'circuitOpen';
  state.heldMs += queueHoldMs;
  if (!isBreakerHold) {
    // The call was made (429/503 + Retry-After): keep it in the history, though it uses no attempt.
    state.attempts.push(record(attempt, 'held', deps, durationMs, error, errorRecord.message, holdMs));
  }
  await persistOwned(job, token, state, deps);
  // Published by the time the job goes back (RateLimitError below), as a retry's is: the stream shows why
  // before what follows.
  await Promise.all([
    deps.events.publish(HELD_STREAM_EVENT, base.jobId, {
      operation: base.operation,
      ...(base.tenant === undefined ? {} : { tenant: base.tenant }),
      reason,
      holdMs,
      until,
      error: errorRecord,
    }),
    // queue.rateLimit, with the maximum that makes other processes honour it (queue-hold.ts).
    holdQueue(deps.connection, deps.queue, queueHoldMs),
  ]);
  // The breaker may have learned of a close while this hold was being applied: its release (hold-release.ts)
  // may have run before the hold landed. Re-check, so a closed breaker never leaves a hold behind.
  if (isBreakerHold && deps.breaker?.state().state === 'closed') await deps.queue.removeRateLimitKey();
  deps.emit('job:service:held', {
    ...base,
    reason,
    holdMs,
    until,
    error: errorRecord,
  });
  throw new RateLimitError();
}

/** Fallback routing (fallback-route.ts): BullMQ's side of it, the lock checks; the rest is applyRoute's. */
async function route(
  job: Job<JobData, StoredResult>,
  token: string | undefined,
  state: DeliveryState,
  routedTo: JobRef,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<StoredResult> {
  return encodeStoredResult(
    await applyRoute(routedJob(job), state, routedTo, base, {
      ...deps,
      router: deps.fallbacks,
      persist: () => persistOwned(job, token, state, deps),
      assertOwned: () => assertOwned(job, token, deps),
    }),
  );
}

/**
 * A breaker hold tells decide() whether the job may go to the service's fallback (`fallbackOpen: false`): the
 * router's answer, from this process's view of the fallback's breaker (no Redis call). Other outcomes as they are.
 */
function withFallbackState(
  outcome: AttemptOutcome,
  service: ServiceConfig,
  job: Job<JobData, StoredResult>,
  deps: DeliveryDeps,
): DeliveryOutcome {
  if (outcome.kind !== 'held' || outcome.error.type !== 'CircuitOpenError' || deps.fallbacks === undefined)
    return outcome;
  const { error, holdMs } = outcome;
  const fallbackOpen = deps.fallbacks.target(service, job.name, job.data) === undefined;
  return { kind: 'held', error, holdMs, fallbackOpen };
}

function routedJob(job: Job<JobData, StoredResult>): RoutedJob {
  return {
    id: job.id ?? '',
    name: job.name,
    data: job.data,
    createdAt: job.timestamp,
    priority: job.opts.priority ?? 0,
  };
}

/**
 * The decided dead letter, written so that no job ends failed without one and none gets two: the decision
 * persisted (state.final), the record written and the source marked, then UnrecoverableError. (`decision.rule`
 * is the onFailure rule that matched, for the reaction.)
 */
async function deadLetter(
  job: Job<JobData, StoredResult>,
  token: string | undefined,
  state: DeliveryState,
  decision: Extract<Decision, { kind: 'deadLetter' }>,
  deps: DeliveryDeps,
  base: EventBase,
  /** The ids of the traced attempt that decided it, for the log line. */
  trace?: TraceIds,
): Promise<never> {
  const finalError = decision.error;
  const attempt = usedAttempts(state.attempts);
  // A run that lost its lock (Redis stalled longer than the lock) was abandoned: another run owns the job
  // now and must be the one to decide. Writing a dead letter here could dead-letter a job that succeeds.
  const rerun = state.final !== undefined;
  if (!rerun) {
    state.final = finalError;
    await persistOwned(job, token, state, deps);
  } else {
    await assertOwned(job, token, deps);
  }
  const deadLetterId = deadLetterJobId(deps.service.name, base.jobId, job.timestamp);
  // A re-run of a job whose dead letter was written (and maybe purged since) before the crash: write none.
  const written = rerun && (await isDeadLettered(deps.writer, deps.queue, base.jobId));
  if (!written) {
    const letter = deadLetterFromJob(deps.service.name, job, deps.clock.now());
    // onFailure: planned before the write, so the record names its follow-up (the job id is fixed); added
    // after it and before the mark, so the mark means "dead letter and follow-up done", and a crash anywhere
    // before it leaves an unmarked job that its re-run (or the sweep) finishes, adding the same job id again
    // (a no-op if it got there): one follow-up per dead letter.
    const followUp = deps.followUps?.planFailure(deps.service, letter, deadLetterId, job.data, decision.rule);
    await deps.writer.write(letter);
    if (followUp?.kind === 'add') await deps.followUps?.add(followUp.job);
    await markDeadLettered(deps.writer, deps.queue, base.jobId, deadLetterId);
  }
  await job.log(`dead-lettered after ${attempt} attempt(s): ${formatFailedReason(finalError)}`);
  deps.logger.warn(
    {
      ...base,
      attempt,
      errorType: finalError.type,
      deadLetterId,
      trace_id: trace?.traceId,
      span_id: trace?.spanId,
    },
    'job dead-lettered',
  );
  deps.emit('job:dead:lettered', { ...base, attempt, deadLetterId, error: finalError });
  throw new UnrecoverableError(formatFailedReason(finalError));
}

/**
 * `then`: adds the next step's job before the job completes and names it in `result.next`. A crash after the
 * add runs the call again (at-least-once) and the add is a no-op: one next job. A next job that cannot be made
 * (template error, chain too deep) dead-letters this job as ValidationError instead.
 */
async function enqueueNext(
  job: Job<JobData, StoredResult>,
  token: string | undefined,
  state: DeliveryState,
  result: JobResult,
  then: CompiledEnqueue,
  policy: DeliveryPolicy,
  attempt: number,
  durationMs: number,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<void> {
  const followUps = deps.followUps;
  if (followUps === undefined) return;
  const data = job.data;
  const idempotencyKey =
    typeof data.idempotencyKey === 'string'
      ? data.idempotencyKey
      : defaultIdempotencyKey(deps.service.name, base.jobId, job.timestamp, data.enqueueId);
  const next = followUps.planThen(deps.service, then, { id: base.jobId, idempotencyKey, data }, result);
  if (next instanceof Error) {
    // A failure of this run like any other (a ValidationError is never retried): the policy decides.
    const decision = decide({ kind: 'failed', error: next }, state, policy, deps.clock.now(), deps.random);
    if (decision.kind !== 'deadLetter') throw mismatch(decision, 'failed');
    state.attempts.push(record(attempt, 'failed', deps, durationMs, next, decision.error.message));
    return deadLetter(job, token, state, decision, deps, base);
  }
  // A run that lost its lock must write nothing (DESIGN §8): the run that owns the job now adds the next step
  // from its own result, or dead-letters the job instead. (One round trip, only for a job with `then`.)
  await assertOwned(job, token, deps);
  await followUps.add(next);
  result.next = { service: next.service, jobId: next.jobId };
}

type EventBase = { service: string; operation: string; jobId: string; tenant: string | undefined };

/**
 * Ferry's state from the job data, checked (anyone can write job data). A malformed one is replaced by a fresh
 * state and reported as `problem` (`.attempts[0]: ...`), so the job is dead-lettered instead of crashing or
 * looping the run.
 */
function readState(data: JobData | undefined): { state: DeliveryState; problem?: string } {
  const raw: unknown = data?.ferry;
  const fresh: DeliveryState = { attempts: [], heldMs: 0, stallsSeen: 0 };
  if (raw === undefined) return { state: fresh };
  const parsed = storedDeliveryStateSchema.safeParse(raw);
  if (parsed.success) return { state: { ...parsed.data, attempts: [...parsed.data.attempts] } };
  const issue = parsed.error.issues[0];
  const where = issue === undefined ? '' : issuePath(issue.path);
  return {
    state: fresh,
    problem: `${where === '' ? '' : where.startsWith('[') ? where : `.${where}`}: ${issue?.message ?? 'invalid'}`,
  };
}

function readTenant(data: JobData | undefined): string | undefined {
  return typeof data?.tenant === 'string' ? data.tenant : undefined;
}

/**
 * BullMQ counts stalls (a worker died or lost its lock mid-run) in stalledCounter. Each new one becomes an
 * `interrupted` entry: the history shows the lost run, and it uses no attempt (DESIGN §8).
 */
function recordStalls(
  job: Job<JobData, StoredResult>,
  state: DeliveryState,
  base: EventBase,
  deps: DeliveryDeps,
): void {
  const stalls = job.stalledCounter ?? 0;
  if (stalls <= state.stallsSeen) return;
  const attempt = usedAttempts(state.attempts) + 1;
  for (let i = state.stallsSeen; i < stalls; i++) {
    state.attempts.push(
      record(
        attempt,
        'interrupted',
        deps,
        0,
        undefined,
        'the worker running this job was lost (crash or stall); it ran again',
      ),
    );
    deps.emit('job:run:interrupted', { ...base, attempt, reason: 'stalled' });
  }
  state.stallsSeen = stalls;
}

function record(
  attempt: number,
  outcome: AttemptRecord['outcome'],
  deps: DeliveryDeps,
  durationMs: number,
  error: FerryError | undefined,
  message: string,
  retryDelayMs?: number,
): AttemptRecord {
  const entry: AttemptRecord = { attempt, outcome, at: deps.clock.now() - durationMs, durationMs, message };
  if (error !== undefined) entry.type = error.type;
  if (error?.status !== undefined) entry.status = error.status;
  if (retryDelayMs !== undefined) entry.retryDelayMs = retryDelayMs;
  return entry;
}

async function persist(job: Job<JobData, StoredResult>, state: DeliveryState): Promise<void> {
  await job.updateData({ ...job.data, ferry: toStoredDeliveryState(state) });
}

/**
 * Thrown by a run that lost its job's lock: it must write nothing (DESIGN §8). BullMQ then cannot move the
 * job either, and leaves it to the run that owns it.
 */
class LostLockError extends Error {
  override readonly name = 'LostLockError';
}

async function assertOwned(
  job: Job<JobData, StoredResult>,
  token: string | undefined,
  deps: DeliveryDeps,
): Promise<void> {
  if (token !== undefined && (await job.extendLock(token, deps.lockDurationMs)) !== 1) {
    throw new LostLockError(`lost the lock of job ${job.id ?? ''}; leaving it to the run that owns it`);
  }
}

/**
 * Writes Ferry's state only while this run still holds the job's lock (extending it), with a retry's log line and
 * event when given: one round trip (record-run.ts), what assertOwned + persist (+ job.log + the event) did.
 */
async function persistOwned(
  job: Job<JobData, StoredResult>,
  token: string | undefined,
  state: DeliveryState,
  deps: DeliveryDeps,
  extra: Pick<RunRecord, 'log' | 'keepLogs' | 'event'> = {},
): Promise<void> {
  // The history stored compactly (core/stored-history.ts): encoded here, in the one write that stores it.
  const data = { ...job.data, ferry: toStoredDeliveryState(state) };
  const jobId = job.id ?? '';
  const jobKey = deps.queue.toKey(jobId);
  const written = await recordRun(deps.connection, {
    keys: {
      lock: `${jobKey}:lock`,
      stalled: deps.queue.toKey('stalled'),
      job: jobKey,
      logs: `${jobKey}:logs`,
      events: deps.queue.toKey('events'),
      meta: deps.queue.toKey('meta'),
    },
    token,
    lockDurationMs: deps.lockDurationMs,
    jobId,
    data: JSON.stringify(data),
    ...extra,
  });
  if (written === 'lostLock')
    throw new LostLockError(`lost the lock of job ${jobId}; leaving it to the run that owns it`);
  // What job.updateData throws for a job that is gone.
  if (written === 'missing') throw new Error(`Missing key for job ${jobId}. updateData`);
  job.data = data;
}

function scrub(deps: DeliveryDeps): (text: string) => string {
  return (text) => deps.scrubber.scrub(text);
}

/** A decision decide() never pairs with this outcome (test/core/delivery-policy.test.ts): a bug, not a job's fault. */
function mismatch(decision: Decision, outcome: string): Error {
  return new Error(`delivery policy: a ${decision.kind} decision cannot be applied to a ${outcome} run`);
}

/** Only primitive values under fixed keys: the logger it is given does not redact (see createDeliveryProcessor). */
function logAttempt(
  logger: Logger,
  base: EventBase,
  attempt: number,
  outcome: AttemptOutcome,
  trace: TraceIds | undefined,
): void {
  switch (outcome.kind) {
    case 'completed':
      logger.info(
        attemptLine(base, attempt, trace, outcome.durationMs, 'completed', outcome.result.status),
        'attempt completed',
      );
      return;
    case 'failed':
    case 'held': {
      const { status, type, message } = outcome.error;
      // A 429/503 with Retry-After asked the service to wait: logged as held, as the breaker's is.
      const kind =
        outcome.kind === 'failed' && requestedHoldMs(outcome.error) !== undefined ? 'held' : outcome.kind;
      logger.warn(
        attemptLine(base, attempt, trace, outcome.durationMs, kind, status, type, message),
        `attempt ${kind}`,
      );
      return;
    }
    case 'interrupted':
      logger.warn(
        attemptLine(base, attempt, trace, outcome.durationMs, 'interrupted'),
        'attempt interrupted by shutdown',
      );
      return;
    case 'deferred':
      // Many a second while a tenant is busy: debug only (ferry_jobs_deferred_total counts them).
      logger.debug(attemptLine(base, attempt, undefined, outcome.durationMs, 'deferred'), 'run deferred');
  }
}

/**
 * The fields of an attempt's log line, as one literal with every key (pino leaves out the undefined ones):
 * the same shape for every line, and no spread, which pino serialised about 15 µs/job slower.
 */
function attemptLine(
  base: EventBase,
  attempt: number,
  trace: TraceIds | undefined,
  durationMs: number,
  outcome: AttemptOutcome['kind'],
  status?: number,
  errorType?: string,
  errorMessage?: string,
) {
  return {
    service: base.service,
    operation: base.operation,
    jobId: base.jobId,
    tenant: base.tenant,
    attempt,
    durationMs,
    outcome,
    status,
    errorType,
    // Not `err`: pino's error serializer would dress this plain message up as an Error with an empty stack.
    errorMessage,
    // OpenTelemetry's log correlation names; present only when the attempt's span records.
    trace_id: trace?.traceId,
    span_id: trace?.spanId,
  };
}
