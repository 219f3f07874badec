/**
 * Errors a breaker throws to its callers. They are recognised by brand, not by `instanceof` alone: two copies
 * of this module (two installed versions, a bundled and an unbundled build) still agree on what a
 * BreakerOpenError is, because the brand is a registered symbol (`Symbol.for`). Cockatiel does the same
 * with `isBrokenCircuitError` (src/errors/Errors.ts).
 */

const breakerOpenBrand: unique symbol = Symbol.for('ferry.breakers.BreakerOpenError');

/**
 * Why a call was refused:
 * - `open`: the breaker is open until a known time; wait `retryAfterMs`.
 * - `probing`: the reset timeout is over and one probe call (in this or another process) decides; try again
 *   shortly.
 */
export type BreakerOpenReason = 'open' | 'probing';

/** The breaker refused the call without running it. The worker maps this to Ferry's `CircuitOpenError`. */
export class BreakerOpenError extends Error {
  override readonly name = 'BreakerOpenError';
  /** Stable machine-readable code; never renamed. */
  readonly code = 'FERRY_BREAKER_OPEN';
  readonly [breakerOpenBrand] = true;
  /** Name of the breaker (the service) that refused the call. */
  readonly breaker: string;
  /** How long to wait before calling again, in ms (> 0). */
  readonly retryAfterMs: number;
  readonly reason: BreakerOpenReason;

  constructor(breaker: string, retryAfterMs: number, reason: BreakerOpenReason) {
    super(
      reason === 'open'
        ? `breaker "${breaker}" is open; retry in ${retryAfterMs} ms`
        : `breaker "${breaker}" is half-open and a probe call is deciding; retry in ${retryAfterMs} ms`,
    );
    this.breaker = breaker;
    this.retryAfterMs = retryAfterMs;
    this.reason = reason;
  }
}

/** True for a BreakerOpenError from any copy of this module; `catch` values are `unknown`. */
export function isBreakerOpenError(error: unknown): error is BreakerOpenError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as { [breakerOpenBrand]?: unknown })[breakerOpenBrand] === true
  );
}

/** A breaker was used after its registry was closed (a shutdown-ordering bug in the caller). */
export class BreakerRegistryClosedError extends Error {
  override readonly name = 'BreakerRegistryClosedError';
  readonly code = 'FERRY_BREAKER_REGISTRY_CLOSED';

  constructor(breaker: string) {
    super(`breaker "${breaker}" was used after its registry was closed`);
  }
}
