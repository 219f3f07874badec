/**
 * Applies an attempt's outcome to BullMQ. Ferry owns the retry policy (DESIGN §8): a raw producer's job has
 * BullMQ's default `attempts: 1`, and BullMQ's own backoff has no cap. So a retry is `moveToDelayed` +
 * DelayedError (BullMQ's attemptsMade does not grow), a hold is `queue.rateLimit` + RateLimitError (the job
 * goes back to the front and no worker in any process takes the queue's jobs until the wait ends), and a dead
 * letter is written *before* UnrecoverableError moves the job to failed, so no job ends failed without one.
 */
import { DelayedError, type Job, type Queue, RateLimitError, UnrecoverableError } from 'bullmq';

import { type ErrorRecord, type FerryError, toErrorRecord } from '../core/errors.ts';
import type { DeliveryEventListener } from '../core/events.ts';
import { formatFailedReason } from '../core/failed-reason.ts';
import type { AttemptRecord, DeliveryState, JobData, JobResult } from '../core/job.ts';
import type { Logger } from '../core/logger.ts';
import { deadLetterJobId } from '../core/queue-layout.ts';
import { deadLetterFromJob } from '../dead-letter/reconciler.ts';
import type { DeadLetterWriter } from '../dead-letter/writer.ts';
import { type AttemptOutcome, type ProcessorDeps, runAttempt } from './processor.ts';
import { decideRetry } from './retry-policy.ts';

export interface DeliveryDeps extends ProcessorDeps {
  queue: Queue<JobData>;
  writer: DeadLetterWriter;
  logger: Logger;
  emit: DeliveryEventListener;
  random: () => number;
  /** Lock duration of the worker, to re-check the lock before a dead letter is written. */
  lockDurationMs: number;
}

/** Wait before a job is retried after Ferry itself failed to record its outcome (Redis hiccup). */
const INTERNAL_RETRY_DELAY_MS = 1_000;

export type DeliveryProcessor = (
  job: Job<JobData, JobResult>,
  token?: string,
  signal?: AbortSignal,
) => Promise<JobResult>;

export function createDeliveryProcessor(deps: DeliveryDeps): DeliveryProcessor {
  const { service, logger } = deps;
  return async (job, token, signal) => {
    const jobId = job.id ?? '';
    const base = { service: service.name, operation: job.name, jobId, tenant: readTenant(job.data) };
    const state = readState(job.data);
    try {
      recordStalls(job, state, base, deps);
      if (state.final !== undefined) {
        // A previous run decided to dead-letter but died before the job reached failed: finish that, no new call.
        return await deadLetter(job, token, state, state.final, deps, base);
      }
      const attempt = usedAttempts(state) + 1;
      const outcome = await runAttempt({ id: jobId, name: job.name, data: job.data }, deps, signal);
      logAttempt(logger, base, attempt, outcome);
      switch (outcome.kind) {
        case 'completed': {
          const result: JobResult = { ...outcome.result, attempts: attempt };
          deps.emit('job:attempt:completed', { ...base, attempt, durationMs: outcome.durationMs, result });
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
          await persist(job, state);
          await job.moveToDelayed(deps.clock.now(), token);
          throw new DelayedError();
        }
        case 'held': {
          if (state.heldMs + outcome.holdMs <= service.retry.maxHoldMs) {
            return await hold(job, state, outcome, attempt, deps, base);
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
        error instanceof UnrecoverableError
      )
        throw error;
      // Ferry could not record the outcome (Redis error). Never fail the job for it: put it back to run again.
      logger.error(
        { ...base, err: error },
        'could not record the outcome of an attempt; the job will run again',
      );
      await job.moveToDelayed(deps.clock.now() + INTERNAL_RETRY_DELAY_MS, token);
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
  const errorRecord = toErrorRecord(error, (text) => deps.scrubber.scrub(text));
  if (decision.kind === 'retry') {
    state.attempts.push(
      record(attempt, 'failed', deps, durationMs, error, errorRecord.message, decision.delayMs),
    );
    await persist(job, state);
    const nextAttemptAt = deps.clock.now() + decision.delayMs;
    await job.log(
      `attempt ${attempt} failed: ${formatFailedReason(errorRecord)}; retrying in ${decision.delayMs} ms`,
    );
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
  state: DeliveryState,
  outcome: Extract<AttemptOutcome, { kind: 'held' }>,
  attempt: number,
  deps: DeliveryDeps,
  base: EventBase,
): Promise<never> {
  const errorRecord = toErrorRecord(outcome.error, (text) => deps.scrubber.scrub(text));
  state.heldMs += outcome.holdMs;
  if (outcome.error.type !== 'CircuitOpenError') {
    // The call was made (429/503 + Retry-After): keep it in the history, though it uses no attempt.
    state.attempts.push(
      record(attempt, 'held', deps, outcome.durationMs, outcome.error, errorRecord.message, outcome.holdMs),
    );
  }
  await persist(job, state);
  await deps.queue.rateLimit(outcome.holdMs);
  const until = deps.clock.now() + outcome.holdMs;
  deps.emit('job:service:held', {
    ...base,
    reason: outcome.error.type === 'CircuitOpenError' ? 'circuitOpen' : 'rateLimited',
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
  const attempt = usedAttempts(state);
  if (state.final === undefined) {
    state.final = finalError;
    await persist(job, state);
  }
  // A run that lost its lock (Redis stalled longer than the lock) was abandoned: another run owns the job
  // now and must be the one to decide. Writing a dead letter here could dead-letter a job that succeeds.
  if (token !== undefined && (await job.extendLock(token, deps.lockDurationMs)) !== 1) {
    throw new Error(`lost the lock of job ${job.id ?? ''}; leaving it to the run that owns it`);
  }
  const dead = deadLetterFromJob(deps.service.name, job, deps.clock.now());
  await deps.writer.write(dead);
  await job.log(`dead-lettered after ${attempt} attempt(s): ${formatFailedReason(finalError)}`);
  deps.logger.warn(
    {
      ...base,
      attempt,
      errorType: finalError.type,
      deadLetterId: deadLetterJobId(deps.service.name, base.jobId),
    },
    'job dead-lettered',
  );
  deps.emit('job:dead:lettered', {
    ...base,
    attempt,
    deadLetterId: deadLetterJobId(deps.service.name, base.jobId),
    error: finalError,
  });
  throw new UnrecoverableError(formatFailedReason(finalError));
}

type EventBase = { service: string; operation: string; jobId: string; tenant: string | undefined };

function readState(data: JobData | undefined): DeliveryState {
  const state = data?.ferry;
  return {
    attempts: Array.isArray(state?.attempts) ? [...state.attempts] : [],
    heldMs: typeof state?.heldMs === 'number' ? state.heldMs : 0,
    stallsSeen: typeof state?.stallsSeen === 'number' ? state.stallsSeen : 0,
    ...(state?.final === undefined ? {} : { final: state.final }),
  };
}

function readTenant(data: JobData | undefined): string | undefined {
  return typeof data?.tenant === 'string' ? data.tenant : undefined;
}

function usedAttempts(state: DeliveryState): number {
  let used = 0;
  for (const attempt of state.attempts) if (attempt.outcome === 'failed') used++;
  return used;
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
  const attempt = usedAttempts(state) + 1;
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

function logAttempt(logger: Logger, base: EventBase, attempt: number, outcome: AttemptOutcome): void {
  const fields = {
    service: base.service,
    operation: base.operation,
    jobId: base.jobId,
    tenant: base.tenant,
    attempt,
    durationMs: outcome.durationMs,
  };
  switch (outcome.kind) {
    case 'completed':
      logger.info({ ...fields, outcome: 'completed', status: outcome.result.status }, 'attempt completed');
      return;
    case 'failed':
    case 'held':
      logger.warn(
        {
          ...fields,
          outcome: outcome.kind,
          status: outcome.error.status,
          errorType: outcome.error.type,
          // Not `err`: pino's error serializer would dress this plain record up as an Error with an empty stack.
          errorMessage: outcome.error.message,
        },
        `attempt ${outcome.kind}`,
      );
      return;
    case 'interrupted':
      logger.warn({ ...fields, outcome: 'interrupted' }, 'attempt interrupted by shutdown');
  }
}
