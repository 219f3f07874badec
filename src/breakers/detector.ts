/**
 * opossum as this process's failure-rate detector, used only while the breaker is closed. Which rejections
 * count is decided per call (`isFailure`), while opossum's `errorFilter` is per breaker: opossum passes the
 * fired arguments to the filter too (lib/circuit.js handleError, opossum 9), so the call's own `isFailure`
 * travels as the second argument and the filter asks it. A filtered rejection is recorded as a success (the
 * service answered) and reaches the caller unchanged.
 */
import CircuitBreaker from 'opossum';

import { type ResolvedBreakerOptions, toOpossumOptions } from './options.ts';

export type IsFailure = (error: unknown) => boolean;

export interface FailureDetector {
  /** Runs `fn` and settles like it; calls `onTripped` (synchronously) when the failure rate opens opossum. */
  run<T>(fn: () => Promise<T>, isFailure: IsFailure): Promise<T>;
  /** Stops opossum's bucket timer. Calls in flight still settle; `onTripped` is no longer called. */
  shutdown(): void;
}

type Action = () => Promise<unknown>;

function runAction(fn: Action, _isFailure: IsFailure): Promise<unknown> {
  return fn();
}

/**
 * Whether `error` counts toward opening. A test that throws counts the error: it runs inside opossum's own
 * promise handlers, where a throw would leave the call never settling (and an unhandled rejection).
 */
export function isCounted(isFailure: IsFailure, error: unknown): boolean {
  try {
    return isFailure(error);
  } catch {
    return true;
  }
}

function isNotFailure(error: unknown, _fn: Action, isFailure: IsFailure): boolean {
  return !isCounted(isFailure, error);
}

/**
 * @param onTripped the failure rate crossed the threshold.
 * @param refusal the error for a call opossum itself would refuse (open or shut down). It cannot refuse while
 *   the caller only uses a detector that has not tripped, but the check keeps opossum's errors away from callers.
 */
export function createFailureDetector(
  name: string,
  options: ResolvedBreakerOptions,
  onTripped: () => void,
  refusal: () => Error,
): FailureDetector {
  const breaker = new CircuitBreaker<[Action, IsFailure], unknown>(
    runAction,
    toOpossumOptions(name, options, isNotFailure),
  );
  breaker.on('open', onTripped);
  return {
    run<T>(fn: () => Promise<T>, isFailure: IsFailure): Promise<T> {
      // Checked here, not by catching opossum's rejection: the hot path then adds no promise of its own. These
      // are the only refusals opossum can make with the options toOpossumOptions gives it (no timeout, no
      // capacity limit).
      if (breaker.isShutdown || !(breaker.closed || breaker.pendingClose)) return Promise.reject(refusal());
      return breaker.fire(fn, isFailure) as Promise<T>;
    },
    shutdown(): void {
      breaker.shutdown();
    },
  };
}
