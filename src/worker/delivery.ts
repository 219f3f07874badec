/**
 * Applies an attempt's outcome to BullMQ. Ferry owns the retry policy (DESIGN §8): a raw producer's job has
 * BullMQ's default `attempts: 1`, and BullMQ's own backoff has no cap. So a retry is `moveToDelayed` +
 * DelayedError (BullMQ's attemptsMade does not grow), a hold is `queue.rateLimit` + RateLimitError (the job
 * goes back to the front and no worker in any process takes the queue's jobs until the wait ends), and a dead
 * letter is written *before* UnrecoverableError moves the job to failed, so no job ends failed without one.
 */
import { DelayedError, type Job, type Queue, RateLimitError, UnrecoverableError } from 'bullmq';

import {
  ConfigurationError,
  type ErrorRecord,
  type FerryError,
  toErrorRecord,
  ValidationError,
} from '../core/errors.ts';
import type { DeliveryEventListener } from '../core/events.ts';
import { formatFailedReason } from '../core/failed-reason.ts';
import {
  type AttemptRecord,
  type DeliveryState,
  deliveryStateSchema,
  issuePath,
  type JobData,
  type JobResult,
  usedAttempts,
} from '../core/job.ts';
import { HELD_STREAM_EVENT, RETRYING_STREAM_EVENT } from '../core/job-events.ts';
import type { Logger } from '../core/logger.ts';
import { deadLetterJobId, defaultIdempotencyKey } from '../core/queue-layout.ts';
import { deadLetterFromJob, isDeadLettered, markDeadLettered } from '../dead-letter/reconciler.ts';
import type { DeadLetterWriter } from '../dead-letter/writer.ts';
import type { FollowUps } from './follow-ups.ts';
import type { JobEventPublisher } from './job-event-publisher.ts';
import { type AttemptOutcome, type ProcessorDeps, runAttempt } from './processor.ts';
import { createRetryAfterWarning } from './retry-after.ts';
import { decideRetry } from './retry-policy.ts';

export interface DeliveryDeps extends ProcessorDeps {
  queue: Queue<JobData>;
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
  /** onFailure and `then` (follow-ups.ts). Without it, no reaction runs. */
  followUps?: FollowUps;
}

/**
 * Longest single queue hold for an open breaker. The hold is tied to the breaker record (worker-pool.ts ends it
 * when the breaker closes), but a worker that applied it from a stale view and died before learning of the
 * close cannot end it: this bounds such a hold. A longer open is held slice after slice, each one taking one
 * job to ask the breaker again: a few jobs moved every 10 s per worker, where a 1 s slice would move one per
 * second per worker slot for the whole open period.
 */
const BREAKER_HOLD_SLICE_MS = 10_000;
/** Wait before a job is retried after Ferry itself failed to record its outcome (Redis hiccup); doubles. */
const INTERNAL_RETRY_DELAY_MS = 1_000;
const MAX_INTERNAL_RETRY_DELAY_MS = 60_000;
/** Failures to record an outcome before the job is dead-lettered instead of run again. */
const MAX_INTERNAL_ERRORS = 5;

/**
 * Two parameters on purpose: BullMQ gives a processor that declares a third one an AbortController of its
 * own for every job, among the largest costs per job in Node 20 (bench/README.md). Cancellation on shutdown
 * comes from `deps.shutdownSignal`, one for the whole pool, instead (BullMQ's per-job signals only served
 * cancelAllJobs).
 */
export type DeliveryProcessor = (job: Job<JobData, JobResult>, token?: string) => Promise<JobResult>;

export function createDeliveryProcessor(deps: DeliveryDeps): DeliveryProcessor {
  const { service, logger } = deps;
  // The one log line every job writes skips pino's redaction, which costs more than the rest of the line: pino
  // runs every field through the wildcard `*.x` redactors, numbers and strings included. It could never change
  // this line: logAttempt writes only fixed keys (none named like a REDACT_PATHS entry) with primitive values,
  // and the error message in it is already scrubbed of secret values. Every other line keeps redaction.
  const attemptLogger = logger.child({}, { redact: [] });
  const signal = deps.shutdownSignal;
  // Decided once: a service with no `then` pays nothing per completed job.
  const hasThen = deps.followUps !== undefined && [...service.operations.values()].some((op) => op.then);
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
    const { state, problem } = readState(job.data);
    try {
      recordStalls(job, state, base, deps);
      if (problem !== undefined) {
        const error = new ValidationError(`bad job data: ferry${problem}`, { field: 'ferry' });
        return await deadLetter(job, token, state, toErrorRecord(error), deps, base);
      }
      if (state.final !== undefined) {
        // A previous run decided to dead-letter but died before the job reached failed: finish that, no new call.
        return await deadLetter(job, token, state, state.final, deps, base);
      }
      const attempt = usedAttempts(state.attempts) + 1;
      const outcome = await runAttempt(
        { id: jobId, name: job.name, data: job.data, createdAt: job.timestamp },
        attemptDeps,
        signal,
      );
      logAttempt(attemptLogger, base, attempt, outcome);
      switch (outcome.kind) {
        case 'completed': {
          // The attempt's own result, completed in place: BullMQ's JSON.stringify of a spread copy costs about
          // twice as much. The keys come out in the same order (attempts last).
          const result = outcome.result as JobResult;
          result.attempts = attempt;
          if (hasThen) await enqueueNext(job, token, state, result, attempt, outcome.durationMs, deps, base);
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
          return result;
        }
        case 'interrupted': {
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
        case 'held': {
          // An open breaker holds the queue slice by slice, each slice counted as it is applied.
          const queueHoldMs =
            outcome.error.type === 'CircuitOpenError'
              ? Math.min(outcome.holdMs, BREAKER_HOLD_SLICE_MS)
              : outcome.holdMs;
          if (state.heldMs + queueHoldMs <= service.retry.maxHoldMs) {
            return await hold(job, token, state, outcome, queueHoldMs, attempt, deps, base);
          }
          // Held longer than the service allows: from now on a hold uses attempts, so a service that never
          // recovers still ends in the dead-letter queue.
          return await fail(job, token, state, outcome.error, attempt, outcome.durationMs, deps, base);
        }
        case 'failed':
          return await fail(job, token, state, outcome.error, attempt, outcome.durationMs, deps, base);
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
      // backoff, and a bound: an error that is not a passing Redis hiccup (a bug) would otherwise call the
      // downstream again and again. (A Redis that is really down cannot record anything: the job's lock
      // expires and BullMQ's stall handling takes over.)
      const internalErrors = (state.internalErrors ?? 0) + 1;
      state.internalErrors = internalErrors;
      const reason = error instanceof Error ? error.message : String(error);
      if (internalErrors >= MAX_INTERNAL_ERRORS) {
        logger.error({ ...base, err: error, internalErrors }, 'could not record the outcome of an attempt');
        const final = new ConfigurationError(
          `Ferry could not record this job's outcome ${internalErrors} times; last error: ${reason}`,
        );
        return await deadLetter(job, token, state, toErrorRecord(final, scrub(deps)), deps, base);
      }
      const delayMs = Math.min(
        INTERNAL_RETRY_DELAY_MS * 2 ** (internalErrors - 1),
        MAX_INTERNAL_RETRY_DELAY_MS,
      );
      logger.error(
        { ...base, err: error, internalErrors, delayMs },
        'could not record the outcome of an attempt; the job will run again',
      );
      await persist(job, state).catch(() => undefined);
      await job.moveToDelayed(deps.clock.now() + delayMs, token);
      throw new DelayedError();
    }
  };
}

async function fail(
  job: Job<JobData, JobResult>,
  token: string | undefined,
  state: DeliveryState,
  error: FerryError,
  attempt: number,
  durationMs: number,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<never> {
  const decision = decideRetry(error, attempt, deps.service.retry, deps.random);
  const errorRecord = toErrorRecord(error, scrub(deps));
  if (decision.kind === 'retry') {
    state.attempts.push(
      record(attempt, 'failed', deps, durationMs, error, errorRecord.message, decision.delayMs),
    );
    await persistOwned(job, token, state, deps);
    const nextAttemptAt = deps.clock.now() + decision.delayMs;
    // The event goes out before the move: once the job is delayed, a short delay can make it active again at
    // once, and the stream must show why it went back before it shows the next run. Alongside the log line,
    // so it costs no round trip of its own.
    await Promise.all([
      job.log(
        `attempt ${attempt} failed: ${formatFailedReason(errorRecord)}; retrying in ${decision.delayMs} ms`,
      ),
      deps.events.publish(RETRYING_STREAM_EVENT, base.jobId, {
        operation: base.operation,
        ...(base.tenant === undefined ? {} : { tenant: base.tenant }),
        attempt,
        error: errorRecord,
        delayMs: decision.delayMs,
        nextAttemptAt,
      }),
    ]);
    await job.moveToDelayed(nextAttemptAt, token);
    deps.emit('job:attempt:retrying', {
      ...base,
      attempt,
      durationMs,
      error: errorRecord,
      delayMs: decision.delayMs,
      nextAttemptAt,
    });
    throw new DelayedError();
  }
  state.attempts.push(record(attempt, 'failed', deps, durationMs, error, errorRecord.message));
  return deadLetter(job, token, state, errorRecord, deps, base);
}

async function hold(
  job: Job<JobData, JobResult>,
  token: string | undefined,
  state: DeliveryState,
  outcome: Extract<AttemptOutcome, { kind: 'held' }>,
  /** How long the queue is held now: outcome.holdMs, or a slice of it for an open breaker. */
  queueHoldMs: number,
  attempt: number,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<never> {
  const errorRecord = toErrorRecord(outcome.error, scrub(deps));
  const isBreakerHold = outcome.error.type === 'CircuitOpenError';
  state.heldMs += queueHoldMs;
  if (!isBreakerHold) {
    // The call was made (429/503 + Retry-After): keep it in the history, though it uses no attempt.
    state.attempts.push(
      record(attempt, 'held', deps, outcome.durationMs, outcome.error, errorRecord.message, outcome.holdMs),
    );
  }
  await persistOwned(job, token, state, deps);
  const reason = outcome.error.type === 'CircuitOpenError' ? 'circuitOpen' : 'rateLimited';
  const until = deps.clock.now() + outcome.holdMs;
  // Published by the time the job goes back (RateLimitError below), as a retry's is: the stream shows why
  // before what follows.
  await Promise.all([
    deps.events.publish(HELD_STREAM_EVENT, base.jobId, {
      operation: base.operation,
      ...(base.tenant === undefined ? {} : { tenant: base.tenant }),
      reason,
      holdMs: outcome.holdMs,
      until,
      error: errorRecord,
    }),
    deps.queue.rateLimit(queueHoldMs),
  ]);
  // The breaker may have learned of a close while this hold was being applied: its release (worker-pool.ts)
  // may have run before the hold landed. Re-check, so a closed breaker never leaves a hold behind.
  if (isBreakerHold && deps.breaker?.state().state === 'closed') await deps.queue.removeRateLimitKey();
  deps.emit('job:service:held', {
    ...base,
    reason,
    holdMs: outcome.holdMs,
    until,
    error: errorRecord,
  });
  throw new RateLimitError();
}

async function deadLetter(
  job: Job<JobData, JobResult>,
  token: string | undefined,
  state: DeliveryState,
  finalError: ErrorRecord,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<never> {
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
  const letter = deadLetterFromJob(deps.service.name, job, deps.clock.now());
  // onFailure: planned before the write, so the record names its follow-up (the job id is fixed); added after
  // it and before the mark, so a crash anywhere in between leaves an unmarked job that its re-run (or the
  // sweep) finishes, adding the same job id again: one follow-up per dead letter.
  const followUp = deps.followUps?.planFailure(deps.service, letter, deadLetterId, job.data);
  if (!written) await deps.writer.write(letter);
  if (followUp?.kind === 'add') await deps.followUps?.add(followUp.job);
  if (!written) await markDeadLettered(deps.writer, deps.queue, base.jobId, deadLetterId);
  await job.log(`dead-lettered after ${attempt} attempt(s): ${formatFailedReason(finalError)}`);
  deps.logger.warn({ ...base, attempt, errorType: finalError.type, deadLetterId }, 'job dead-lettered');
  deps.emit('job:dead:lettered', { ...base, attempt, deadLetterId, error: finalError });
  throw new UnrecoverableError(formatFailedReason(finalError));
}

/**
 * `then`: adds the next step's job before the job completes and names it in `result.next`. A crash after the
 * add runs the call again (at-least-once) and the add is a no-op: one next job. A next job that cannot be made
 * (template error, chain too deep) dead-letters this job as ValidationError instead.
 */
async function enqueueNext(
  job: Job<JobData, JobResult>,
  token: string | undefined,
  state: DeliveryState,
  result: JobResult,
  attempt: number,
  durationMs: number,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<void> {
  const then = deps.service.operations.get(job.name)?.then;
  const followUps = deps.followUps;
  if (then === undefined || followUps === undefined) return;
  const data = job.data;
  const idempotencyKey =
    typeof data.idempotencyKey === 'string'
      ? data.idempotencyKey
      : defaultIdempotencyKey(deps.service.name, base.jobId, job.timestamp, data.enqueueId);
  const next = followUps.planThen(deps.service, then, { id: base.jobId, idempotencyKey, data }, result);
  if (next instanceof Error) {
    const errorRecord = toErrorRecord(next, scrub(deps));
    state.attempts.push(record(attempt, 'failed', deps, durationMs, next, errorRecord.message));
    return deadLetter(job, token, state, errorRecord, deps, base);
  }
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
  const parsed = deliveryStateSchema.safeParse(raw);
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
  job: Job<JobData, JobResult>,
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

async function persist(job: Job<JobData, JobResult>, state: DeliveryState): Promise<void> {
  await job.updateData({ ...job.data, ferry: state });
}

/**
 * Thrown by a run that lost its job's lock: it must write nothing (DESIGN §8). BullMQ then cannot move the
 * job either, and leaves it to the run that owns it.
 */
class LostLockError extends Error {
  override readonly name = 'LostLockError';
}

async function assertOwned(
  job: Job<JobData, JobResult>,
  token: string | undefined,
  deps: DeliveryDeps,
): Promise<void> {
  if (token !== undefined && (await job.extendLock(token, deps.lockDurationMs)) !== 1) {
    throw new LostLockError(`lost the lock of job ${job.id ?? ''}; leaving it to the run that owns it`);
  }
}

/** Writes Ferry's state only while this run still holds the job's lock. */
async function persistOwned(
  job: Job<JobData, JobResult>,
  token: string | undefined,
  state: DeliveryState,
  deps: DeliveryDeps,
): Promise<void> {
  await assertOwned(job, token, deps);
  await persist(job, state);
}

function scrub(deps: DeliveryDeps): (text: string) => string {
  return (text) => deps.scrubber.scrub(text);
}

/** Only primitive values under fixed keys: the logger it is given does not redact (see createDeliveryProcessor). */
function logAttempt(logger: Logger, base: EventBase, attempt: number, outcome: AttemptOutcome): void {
  switch (outcome.kind) {
    case 'completed':
      logger.info(
        attemptLine(base, attempt, outcome.durationMs, 'completed', outcome.result.status),
        'attempt completed',
      );
      return;
    case 'failed':
    case 'held': {
      const { status, type, message } = outcome.error;
      logger.warn(
        attemptLine(base, attempt, outcome.durationMs, outcome.kind, status, type, message),
        `attempt ${outcome.kind}`,
      );
      return;
    }
    case 'interrupted':
      logger.warn(
        attemptLine(base, attempt, outcome.durationMs, 'interrupted'),
        'attempt interrupted by shutdown',
      );
  }
}

/**
 * The fields of an attempt's log line, as one literal with every key (pino leaves out the undefined ones):
 * the same shape for every line, and no spread, which pino serialised about 15 µs/job slower.
 */
function attemptLine(
  base: EventBase,
  attempt: number,
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
  };
}
