/**
 * Breaker state as a discriminated union, and every transition as one pure function of (state, input).
 * Time is an input (`nowMs`), never read here, so the table in test/breakers/state.test.ts is the spec.
 */

export type BreakerState =
  | { state: 'closed' }
  /** Calls are refused until `untilMs` (epoch ms), in every process. */
  | { state: 'open'; untilMs: number }
  /** `untilMs` has passed: one probe call cluster-wide decides. */
  | { state: 'halfOpen' };

/** What a registry stores in Redis at `keyFor(name)` while the breaker is open or half-open. */
export interface SharedOpenRecord {
  /** Until when calls are refused (epoch ms). */
  untilMs: number;
  /** When this open period started (epoch ms). */
  openedAtMs: number;
  /**
   * Set when an operator opened it (`ferry breakers open`, `ServiceBreaker.open()`): an automatic trip never
   * replaces or shortens it while it lasts, and only the probe after `untilMs` (or a manual close) ends it.
   */
  manual?: true;
  /** Why it was opened by hand (shown by `ferry breakers list`); only with `manual`. */
  reason?: string;
}

/** Where a transition came from, as reported on `breaker:state:changed`. */
export type TransitionSource = 'local' | 'shared' | 'manual';

export type BreakerInput =
  /** This process's failure-rate detector (opossum) opened. */
  | { type: 'tripped'; nowMs: number; resetTimeoutMs: number }
  /** Time passed. */
  | { type: 'elapsed'; nowMs: number }
  /** The probe this process ran succeeded, or was rejected with a non-counted error (the service answered). */
  | { type: 'probeSucceeded' }
  /** The probe this process ran failed with a counted failure. */
  | { type: 'probeFailed'; nowMs: number; resetTimeoutMs: number }
  /** A read of the shared state; `record: null` means no key (closed by someone, or expired). */
  | { type: 'sharedObserved'; record: SharedOpenRecord | null; nowMs: number }
  | { type: 'manualOpened'; untilMs: number }
  | { type: 'manualClosed' };

export const closedState: BreakerState = Object.freeze({ state: 'closed' });
export const halfOpenState: BreakerState = Object.freeze({ state: 'halfOpen' });

/** The state after `input`; the same object when nothing changes, so callers can compare by identity. */
export function nextState(current: BreakerState, input: BreakerInput): BreakerState {
  switch (input.type) {
    case 'tripped':
      // Only a closed breaker trips; an open one was opened by someone else first (no second open period).
      return current.state === 'closed' ? openUntil(input.nowMs + input.resetTimeoutMs) : current;
    case 'elapsed':
      return current.state === 'open' && input.nowMs >= current.untilMs ? halfOpenState : current;
    case 'probeSucceeded':
      return current.state === 'halfOpen' ? closedState : current;
    case 'probeFailed':
      return current.state === 'halfOpen' ? openUntil(input.nowMs + input.resetTimeoutMs) : current;
    case 'sharedObserved':
      return observe(current, input.record, input.nowMs);
    case 'manualOpened':
      return current.state === 'open' && current.untilMs === input.untilMs
        ? current
        : openUntil(input.untilMs);
    case 'manualClosed':
      return current.state === 'closed' ? current : closedState;
    default:
      return assertNever(input);
  }
}

/** Which `source` a transition caused by `input` is reported with. */
export function sourceOf(input: BreakerInput): TransitionSource {
  switch (input.type) {
    case 'tripped':
    case 'elapsed':
    case 'probeSucceeded':
    case 'probeFailed':
      return 'local';
    case 'sharedObserved':
      return 'shared';
    case 'manualOpened':
    case 'manualClosed':
      return 'manual';
    default:
      return assertNever(input);
  }
}

export function isSameState(a: BreakerState, b: BreakerState): boolean {
  if (a.state === 'open' && b.state === 'open') return a.untilMs === b.untilMs;
  return a.state === b.state;
}

/** How long a caller should wait while the breaker is open at `nowMs` (>= 1 ms). */
export function remainingOpenMs(state: { untilMs: number }, nowMs: number): number {
  return Math.max(Math.ceil(state.untilMs - nowMs), 1);
}

function observe(current: BreakerState, record: SharedOpenRecord | null, nowMs: number): BreakerState {
  if (record === null) return current.state === 'closed' ? current : closedState;
  if (record.untilMs > nowMs) {
    return current.state === 'open' && current.untilMs === record.untilMs
      ? current
      : openUntil(record.untilMs);
  }
  // Open period over, key still there: nobody has closed it yet, so a probe is due.
  return current.state === 'halfOpen' ? current : halfOpenState;
}

function openUntil(untilMs: number): BreakerState {
  return Object.freeze({ state: 'open', untilMs });
}

function assertNever(value: never): never {
  throw new TypeError(`unexpected breaker input ${JSON.stringify(value)}`);
}
