/**
 * opossum as this process's failure-rate detector, used only while the breaker is closed. Which rejections
 * count is decided per call (`isFailure`), while opossum's `errorFilter` is per breaker: a rejection that does
 * not count travels through opossum wrapped in UncountedRejection (filtered: opossum records it as a success,
 * the service answered) and is unwrapped before the caller sees it.
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

class UncountedRejection {
  readonly error: unknown;
  constructor(error: unknown) {
    this.error = error;
  }
}

const isUncounted = (error: unknown): boolean => error instanceof UncountedRejection;

async function runCounted(fn: Action, isFailure: IsFailure): Promise<unknown> {
  try {
    return await fn();
  } catch (error) {
    throw isFailure(error) ? error : new UncountedRejection(error);
  }
}

/**
 * @param onTripped the failure rate crossed the threshold.
 * @param refusal the error for a call opossum itself refused (open or shut down). It cannot refuse while the
 *   caller only uses a detector that has not tripped, but the mapping keeps opossum's errors away from callers.
 */
export function createFailureDetector(
  name: string,
  options: ResolvedBreakerOptions,
  onTripped: () => void,
  refusal: () => Error,
): FailureDetector {
  const breaker = new CircuitBreaker<[Action, IsFailure], unknown>(
    runCounted,
    toOpossumOptions(name, options, isUncounted),
  );
  breaker.on('open', onTripped);
  return {
    async run<T>(fn: () => Promise<T>, isFailure: IsFailure): Promise<T> {
      try {
        return (await breaker.fire(fn, isFailure)) as T;
      } catch (error) {
        if (error instanceof UncountedRejection) throw error.error;
        if (error instanceof Error && CircuitBreaker.isOurError(error)) throw refusal();
        throw error;
      }
    },
    shutdown(): void {
      breaker.shutdown();
    },
  };
}
