/**
 * The whole delivery decision as one table (cockatiel style: a policy is a pure function, its test a list of
 * inputs and answers): every outcome a run can have, against the states a job can be in. No Redis, no clock:
 * `now` is fixed and `random` returns 0.5, so a backoff is half its cap.
 */
import { describe, expect, it } from 'vitest';

import {
  decide,
  type Decision,
  DEFER_MAX_MS,
  DEFER_MIN_MS,
  deferDelayMs,
  type DeliveryOutcome,
  type DeliveryPolicy,
} from '../../src/core/delivery-policy.ts';
import {
  AuthenticationError,
  CircuitOpenError,
  ClientError,
  type ErrorRecord,
  type FerryError,
  NetworkError,
  RateLimitedError,
  ServerError,
  ValidationError,
} from '../../src/core/errors.ts';
import type { AttemptRecord, DeliveryState } from '../../src/core/job.ts';
import type { CompiledEnqueue, FailureRule, RetryPolicy } from '../../src/core/services/types.ts';

const NOW = 1_700_000_000_000;
const random = (): number => 0.5;

const retry: RetryPolicy = {
  attempts: 3,
  delayMs: 1_000,
  maxDelayMs: 10_000,
  retryOn: [409],
  maxRetryAfterMs: 60_000,
  maxHoldMs: 30_000,
};
const enqueue = (service: string, operation: string): CompiledEnqueue => ({
  service,
  operation,
  input: undefined,
});
const THEN = enqueue('billing', 'createCustomer');
/** The example, plus a status rule and a rule naming both. */
const RULES: readonly FailureRule[] = [
  {
    when: { errorTypes: ['AuthenticationError'], statuses: undefined },
    enqueue: enqueue('ops', 'rotateAlert'),
  },
  { when: { errorTypes: undefined, statuses: [404, 410] }, enqueue: enqueue('ops', 'gone') },
  { when: { errorTypes: ['ServerError'], statuses: [502] }, enqueue: enqueue('ops', 'badGateway') },
  { when: undefined, enqueue: enqueue('crm-backup', 'createContact') },
];
const CATCH_ALL = 3;
const policy: DeliveryPolicy = {
  retry,
  onFailure: RULES,
  then: undefined,
  fallback: undefined,
  scrub: undefined,
};

const failedRun = (attempt: number): AttemptRecord => ({
  attempt,
  outcome: 'failed',
  at: 0,
  durationMs: 1,
  message: 'x',
});
const interruptedRun: AttemptRecord = {
  attempt: 1,
  outcome: 'interrupted',
  at: 0,
  durationMs: 0,
  message: 'x',
};
const state = (fields: Partial<DeliveryState> = {}): DeliveryState => ({
  attempts: [],
  heldMs: 0,
  stallsSeen: 0,
  ...fields,
});
/** Attempts 1..n used. */
const used = (n: number): Partial<DeliveryState> => ({
  attempts: Array.from({ length: n }, (_, i) => failedRun(i + 1)),
});

const failed = (error: FerryError): DeliveryOutcome => ({ kind: 'failed', error });
const breakerOpen = (holdMs: number, fallbackOpen?: boolean): DeliveryOutcome => ({
  kind: 'held',
  error: new CircuitOpenError('circuit breaker for "sms" is open', { retryAfterMs: holdMs }),
  holdMs,
  fallbackOpen,
});
const retryIn = (delayMs: number): Decision => ({ kind: 'retry', delayMs, nextAttemptAt: NOW + delayMs });
const deadLetter = (error: ErrorRecord, rule: number = CATCH_ALL): Decision => ({
  kind: 'deadLetter',
  error,
  rule,
});
const unmatched = (error: ErrorRecord): Decision => ({ kind: 'deadLetter', error, rule: undefined });
const hold = (holdMs: number, queueHoldMs: number, reason: 'circuitOpen' | 'rateLimited'): Decision => ({
  kind: 'hold',
  holdMs,
  queueHoldMs,
  reason,
  until: NOW + holdMs,
});
const FINAL: ErrorRecord = { type: 'AuthenticationError', message: 'bad token', status: 401 };

interface Row {
  name: string;
  outcome: DeliveryOutcome;
  state?: Partial<DeliveryState>;
  policy?: Partial<DeliveryPolicy>;
  expected: Decision;
}

const rows: Row[] = [
  // ---- completed ----
  {
    name: 'completed, no then → complete',
    outcome: { kind: 'completed' },
    expected: { kind: 'complete', then: undefined },
  },
  {
    name: 'completed, then → complete with the next step',
    outcome: { kind: 'completed' },
    policy: { then: THEN },
    expected: { kind: 'complete', then: THEN },
  },
  {
    name: 'completed after failed attempts → complete',
    outcome: { kind: 'completed' },
    state: used(2),
    expected: { kind: 'complete', then: undefined },
  },

  // ---- failed: retry or dead letter ----
  {
    name: 'ServerError, attempt 1 of 3 → retry after half of 1 s',
    outcome: failed(new ServerError('x', { status: 500 })),
    expected: retryIn(500),
  },
  {
    name: 'ServerError, attempt 2 of 3 → retry after half of 2 s',
    outcome: failed(new ServerError('x', { status: 500 })),
    state: used(1),
    expected: retryIn(1_000),
  },
  {
    name: 'NetworkError, interrupted runs use no attempt → still attempt 1',
    outcome: failed(new NetworkError('reset')),
    state: { attempts: [interruptedRun, interruptedRun] },
    expected: retryIn(500),
  },
  {
    name: 'ServerError at the last attempt → dead letter, catch-all rule',
    outcome: failed(new ServerError('boom', { status: 500 })),
    state: used(2),
    expected: deadLetter({ type: 'ServerError', message: 'boom', status: 500 }),
  },
  {
    name: 'retryable error beyond the attempts (state from a larger policy) → dead letter',
    outcome: failed(new NetworkError('reset')),
    state: used(7),
    expected: deadLetter({ type: 'NetworkError', message: 'reset' }),
  },
  {
    name: 'ClientError 422: not retryable → dead letter after one call',
    outcome: failed(new ClientError('bad', { status: 422 })),
    expected: deadLetter({ type: 'ClientError', message: 'bad', status: 422 }),
  },
  {
    name: 'ClientError 408 → retry',
    outcome: failed(new ClientError('x', { status: 408 })),
    expected: retryIn(500),
  },
  {
    name: 'ClientError 425 → retry',
    outcome: failed(new ClientError('x', { status: 425 })),
    expected: retryIn(500),
  },
  {
    name: 'ClientError 409 in retry.retryOn → retry',
    outcome: failed(new ClientError('x', { status: 409 })),
    expected: retryIn(500),
  },
  {
    name: 'ClientError 409 without retryOn → dead letter',
    outcome: failed(new ClientError('x', { status: 409 })),
    policy: { retry: { ...retry, retryOn: [] } },
    expected: deadLetter({ type: 'ClientError', message: 'x', status: 409 }),
  },
  {
    name: 'Retry-After on a 500 replaces the backoff (not a hold: only 429/503 hold)',
    outcome: failed(new ServerError('x', { status: 500, retryAfterMs: 7_000 })),
    state: used(1),
    expected: retryIn(7_000),
  },
  {
    name: 'ValidationError → dead letter at once',
    outcome: failed(new ValidationError('input.email: required', { field: 'input.email' })),
    expected: deadLetter({ type: 'ValidationError', message: 'input.email: required', field: 'input.email' }),
  },
  {
    name: 'the dead letter message goes through the policy’s scrub',
    outcome: failed(new ClientError('token s3cr3t refused', { status: 400 })),
    policy: { scrub: (text) => text.replaceAll('s3cr3t', '[secret]') },
    expected: deadLetter({ type: 'ClientError', message: 'token [secret] refused', status: 400 }),
  },

  // ---- onFailure rule matching (the first match; file order) ----
  {
    name: 'rule by type: AuthenticationError → rule 0',
    outcome: failed(new AuthenticationError('no', { status: 401 })),
    expected: deadLetter({ type: 'AuthenticationError', message: 'no', status: 401 }, 0),
  },
  {
    name: 'rule by status: ClientError 404 → rule 1',
    outcome: failed(new ClientError('gone', { status: 404 })),
    expected: deadLetter({ type: 'ClientError', message: 'gone', status: 404 }, 1),
  },
  {
    name: 'rule by type and status: ServerError 502 → rule 2',
    outcome: failed(new ServerError('bad gateway', { status: 502 })),
    state: used(2),
    expected: deadLetter({ type: 'ServerError', message: 'bad gateway', status: 502 }, 2),
  },
  {
    name: 'type matches but status does not: ServerError 500 → catch-all',
    outcome: failed(new ServerError('x', { status: 500 })),
    state: used(2),
    expected: deadLetter({ type: 'ServerError', message: 'x', status: 500 }, CATCH_ALL),
  },
  {
    name: 'a status rule never matches an error without a status → the next rule',
    outcome: failed(new ValidationError('x')),
    policy: { onFailure: [RULES[1]!, RULES[3]!] },
    expected: deadLetter({ type: 'ValidationError', message: 'x' }, 1),
  },
  {
    name: 'no rule matches → rule undefined',
    outcome: failed(new ClientError('x', { status: 422 })),
    policy: { onFailure: RULES.slice(0, 3) },
    expected: unmatched({ type: 'ClientError', message: 'x', status: 422 }),
  },
  {
    name: 'no rules at all → rule undefined',
    outcome: failed(new ClientError('x', { status: 422 })),
    policy: { onFailure: [] },
    expected: unmatched({ type: 'ClientError', message: 'x', status: 422 }),
  },

  // ---- held: the service asked to wait (429/503 with Retry-After) ----
  {
    name: '429 with Retry-After → rate-limited hold, no attempt',
    outcome: failed(new RateLimitedError('slow down', { status: 429, retryAfterMs: 2_000 })),
    expected: hold(2_000, 2_000, 'rateLimited'),
  },
  {
    name: '503 with Retry-After → hold, at least 250 ms',
    outcome: failed(new ServerError('busy', { status: 503, retryAfterMs: 0 })),
    expected: hold(250, 250, 'rateLimited'),
  },
  {
    name: '503 without Retry-After → an ordinary retry',
    outcome: failed(new ServerError('busy', { status: 503 })),
    expected: retryIn(500),
  },
  {
    name: 'hold within maxHoldMs exactly (28 s held + 2 s = 30 s) → hold',
    outcome: failed(new RateLimitedError('slow', { status: 429, retryAfterMs: 2_000 })),
    state: { heldMs: 28_000 },
    expected: hold(2_000, 2_000, 'rateLimited'),
  },
  {
    name: 'hold over maxHoldMs → uses an attempt: retry after the Retry-After',
    outcome: failed(new RateLimitedError('slow', { status: 429, retryAfterMs: 2_000 })),
    state: { heldMs: 28_001 },
    expected: retryIn(2_000),
  },
  {
    name: 'hold over maxHoldMs at the last attempt → dead letter',
    outcome: failed(new RateLimitedError('slow', { status: 429, retryAfterMs: 2_000 })),
    state: { ...used(2), heldMs: 30_000 },
    expected: deadLetter({ type: 'RateLimitedError', message: 'slow', status: 429, retryAfterMs: 2_000 }),
  },

  // ---- held: the breaker is open (no call made) ----
  {
    name: 'breaker open 5 s → hold 5 s',
    outcome: breakerOpen(5_000),
    expected: hold(5_000, 5_000, 'circuitOpen'),
  },
  {
    name: 'breaker open 25 s → hold sliced to 10 s, until the whole 25 s',
    outcome: breakerOpen(25_000),
    expected: hold(25_000, 10_000, 'circuitOpen'),
  },
  {
    name: 'breaker hold: the slice, not the whole open time, counts against maxHoldMs',
    outcome: breakerOpen(25_000),
    state: { heldMs: 20_000 },
    expected: hold(25_000, 10_000, 'circuitOpen'),
  },
  {
    name: 'breaker hold over budget → uses an attempt: retry after the open time',
    outcome: breakerOpen(25_000),
    state: { heldMs: 20_001 },
    expected: retryIn(25_000),
  },
  {
    name: 'breaker hold over budget at the last attempt → dead letter',
    outcome: breakerOpen(25_000),
    state: { ...used(2), heldMs: 30_000 },
    expected: deadLetter({
      type: 'CircuitOpenError',
      message: 'circuit breaker for "sms" is open',
      retryAfterMs: 25_000,
    }),
  },
  {
    name: 'breaker open, fallback’s breaker closed → route to the fallback',
    outcome: breakerOpen(25_000, false),
    policy: { fallback: 'sms-backup' },
    expected: { kind: 'route', service: 'sms-backup' },
  },
  {
    name: 'breaker open, fallback’s closed, hold budget spent → still route',
    outcome: breakerOpen(25_000, false),
    state: { ...used(2), heldMs: 30_000 },
    policy: { fallback: 'sms-backup' },
    expected: { kind: 'route', service: 'sms-backup' },
  },
  {
    name: 'breaker open, fallback’s open too → hold as without one',
    outcome: breakerOpen(25_000, true),
    policy: { fallback: 'sms-backup' },
    expected: hold(25_000, 10_000, 'circuitOpen'),
  },
  {
    name: 'breaker open, fallback’s state not given → hold',
    outcome: breakerOpen(25_000),
    policy: { fallback: 'sms-backup' },
    expected: hold(25_000, 10_000, 'circuitOpen'),
  },
  {
    name: 'breaker open, no fallback → hold',
    outcome: breakerOpen(25_000, false),
    expected: hold(25_000, 10_000, 'circuitOpen'),
  },
  {
    name: 'a held 429 is never routed (only an open breaker is)',
    outcome: {
      kind: 'held',
      error: new RateLimitedError('slow', { status: 429, retryAfterMs: 2_000 }),
      holdMs: 2_000,
      fallbackOpen: false,
    },
    policy: { fallback: 'sms-backup' },
    expected: hold(2_000, 2_000, 'rateLimited'),
  },

  // ---- interrupted by shutdown ----
  {
    name: 'interrupted → requeue, no attempt',
    outcome: { kind: 'interrupted' },
    expected: { kind: 'requeue' },
  },
  {
    name: 'interrupted at the last attempt → requeue',
    outcome: { kind: 'interrupted' },
    state: used(2),
    expected: { kind: 'requeue' },
  },

  // ---- deferred: the tenant is at its tenantConcurrency (random 0.5 → halfway through 100–500 ms) ----
  {
    name: 'deferred → defer 300 ms, no attempt used',
    outcome: { kind: 'deferred', reason: 'tenantConcurrency' },
    expected: { kind: 'defer', delayMs: 300 },
  },
  {
    name: 'deferred at the last attempt → still defer (waiting its turn uses no attempt)',
    outcome: { kind: 'deferred', reason: 'tenantConcurrency' },
    state: used(3),
    expected: { kind: 'defer', delayMs: 300 },
  },
  {
    name: 'deferred with the hold budget spent → still defer (no bound: never dead-lettered for waiting)',
    outcome: { kind: 'deferred', reason: 'tenantConcurrency' },
    state: { ...used(2), heldMs: 30_000, internalErrors: 4 },
    expected: { kind: 'defer', delayMs: 300 },
  },
  {
    name: 'deferred while the breaker has a fallback → defer, not route (no call was tried)',
    outcome: { kind: 'deferred', reason: 'tenantConcurrency' },
    policy: { fallback: 'sms-backup' },
    expected: { kind: 'defer', delayMs: 300 },
  },

  // ---- runs that made no call ----
  {
    name: 're-run with state.final → the decided dead letter again, no call',
    outcome: { kind: 'skipped' },
    state: { ...used(3), final: FINAL },
    expected: deadLetter(FINAL, 0),
  },
  {
    name: 're-run with state.routedTo → finish that route (same job id), no call, no breaker asked',
    outcome: { kind: 'skipped' },
    state: { routedTo: { service: 'sms-backup', jobId: 'idem-abc' } },
    expected: { kind: 'route', service: 'sms-backup', jobId: 'idem-abc' },
  },
  {
    name: 're-run with state.routedTo and a later state.final → the dead letter stands',
    outcome: { kind: 'skipped' },
    state: { routedTo: { service: 'sms-backup', jobId: 'idem-abc' }, final: FINAL },
    expected: deadLetter(FINAL, 0),
  },
  {
    name: 'skipped without state.final → requeue',
    outcome: { kind: 'skipped' },
    expected: { kind: 'requeue' },
  },
  {
    name: 'bad state → ValidationError dead letter naming the field',
    outcome: { kind: 'badState', problem: '.attempts[0]: Invalid input' },
    expected: deadLetter({
      type: 'ValidationError',
      message: 'bad job data: ferry.attempts[0]: Invalid input',
      field: 'ferry',
    }),
  },

  // ---- Ferry could not record the outcome ----
  {
    name: 'internal error 1 of 5 → retry after 1 s',
    outcome: { kind: 'internalError', message: 'Connection is closed.' },
    expected: retryIn(1_000),
  },
  {
    name: 'internal error 4 of 5 → retry after 8 s (doubling, no jitter)',
    outcome: { kind: 'internalError', message: 'Connection is closed.' },
    state: { internalErrors: 3 },
    expected: retryIn(8_000),
  },
  {
    name: 'internal error 5 of 5 → ConfigurationError dead letter',
    outcome: { kind: 'internalError', message: 'Connection is closed.' },
    state: { internalErrors: 4 },
    expected: deadLetter({
      type: 'ConfigurationError',
      message: "Ferry could not record this job's outcome 5 times; last error: Connection is closed.",
    }),
  },
  {
    name: 'internal error 5 of 5 after a decided dead letter → that dead letter',
    outcome: { kind: 'internalError', message: 'Connection is closed.' },
    state: { internalErrors: 4, final: FINAL },
    expected: deadLetter(FINAL, 0),
  },
  {
    name: 'internal error 1 of 5 after a decided dead letter → retry (the re-run finishes it)',
    outcome: { kind: 'internalError', message: 'Connection is closed.' },
    state: { final: FINAL },
    expected: retryIn(1_000),
  },
];

describe('deferDelayMs', () => {
  it('draws the deferral wait from [100, 500) ms, jittered by random', () => {
    expect(deferDelayMs(() => 0)).toBe(DEFER_MIN_MS);
    expect(deferDelayMs(() => 0.999_999)).toBe(DEFER_MAX_MS - 1);
    expect([DEFER_MIN_MS, DEFER_MAX_MS]).toEqual([100, 500]);
    const deferred: DeliveryOutcome = { kind: 'deferred', reason: 'tenantConcurrency' };
    expect(decide(deferred, state(), policy, NOW, () => 0.25)).toEqual({ kind: 'defer', delayMs: 200 });
  });
});

describe('decide(outcome, state, policy, now, random)', () => {
  it.each(rows)('$name', (row) => {
    const rowPolicy: DeliveryPolicy = { ...policy, ...row.policy };
    expect(decide(row.outcome, state(row.state), rowPolicy, NOW, random)).toEqual(row.expected);
  });

  it('allocates nothing for a completed job without then, nor for a requeue: the same answer every time', () => {
    const completed: DeliveryOutcome = { kind: 'completed' };
    expect(decide(completed, state(), policy, NOW, random)).toBe(
      decide(completed, state(), policy, NOW + 1, random),
    );
    const interrupted: DeliveryOutcome = { kind: 'interrupted' };
    expect(decide(interrupted, state(), policy, NOW, random)).toBe(
      decide(interrupted, state(), policy, NOW, random),
    );
  });
});
