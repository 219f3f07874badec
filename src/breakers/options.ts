/**
 * Breaker options in Ferry's units (ms, percent), their defaults, and the mapping onto opossum's names.
 *
 * Glossary:
 * - breaker: one per service and process; opossum counts failures locally, Redis shares the open state.
 * - counted failure: a rejection for which the caller's `isFailure(error)` is true (Ferry: Timeout, Network,
 *   Server errors). Other rejections reach the caller unchanged and count as answered calls.
 * - open: calls are refused (BreakerOpenError) until `untilMs`, in every process.
 * - half-open: `untilMs` has passed; exactly one probe call cluster-wide decides between closed and open.
 * - probe lock: `SET <key>:probe <id> NX PX probeTimeoutMs`, won by the one caller that probes.
 */
import type CircuitBreaker from 'opossum';

const SECOND = 1000;
const MINUTE = 60 * SECOND;

export interface BreakerOptions {
  /** Failure percentage in the rolling window above which (strictly) the breaker opens. 0–100. */
  errorThresholdPercentage: number;
  /** Calls the rolling window must hold before the percentage is considered. Integer >= 0. */
  volumeThreshold: number;
  /** Length of the rolling statistics window, in ms (split into 10 buckets). Integer >= 10. */
  rollingWindowMs: number;
  /** How long the breaker stays open before one probe call decides, in ms. Integer >= 1. */
  resetTimeoutMs: number;
  /**
   * How long a half-open probe may run before another process may probe, in ms: the TTL of the probe lock,
   * so a process that dies mid-probe blocks the service for at most this long. Keep it above the caller's
   * own whole-attempt timeout. Default 30 s.
   */
  probeTimeoutMs?: number;
}

export type ResolvedBreakerOptions = Readonly<Required<BreakerOptions>>;

/** Every default of this module, in one place. */
export const breakerDefaults = {
  /** BreakerOptions.probeTimeoutMs. */
  probeTimeoutMs: 30 * SECOND,
  /** BreakerRegistryOptions.syncIntervalMs: how often each registry GETs each breaker's shared state. */
  syncIntervalMs: 500,
  /** retryAfterMs given to callers refused because another caller holds the half-open probe. */
  probeRetryAfterMs: 1 * SECOND,
  /** opossum rollingCountBuckets: the rolling window is split into this many buckets. */
  rollingWindowBuckets: 10,
  /**
   * The shared open key outlives `untilMs` by at least this much (PX), so every process can still see that the
   * breaker is half-open after `untilMs`, and a probe lost with a dead process can be retried. Raised to
   * 3 × probeTimeoutMs when that is longer. A key that expires anyway means nobody probed for that long: the
   * breaker closes.
   */
  sharedStateMarginMs: 1 * MINUTE,
} as const satisfies Required<Pick<BreakerOptions, 'probeTimeoutMs'>> & Record<string, number>;

/** Checks options (a programming error throws RangeError naming the field) and fills in defaults. */
export function resolveBreakerOptions(name: string, options: BreakerOptions): ResolvedBreakerOptions {
  const resolved: Required<BreakerOptions> = {
    errorThresholdPercentage: options.errorThresholdPercentage,
    volumeThreshold: options.volumeThreshold,
    rollingWindowMs: options.rollingWindowMs,
    resetTimeoutMs: options.resetTimeoutMs,
    probeTimeoutMs: options.probeTimeoutMs ?? breakerDefaults.probeTimeoutMs,
  };
  const fail = (field: keyof BreakerOptions, expectation: string): never => {
    throw new RangeError(
      `breaker "${name}": ${field} must be ${expectation} (got ${String(resolved[field])})`,
    );
  };
  const p = resolved.errorThresholdPercentage;
  if (!(Number.isFinite(p) && p >= 0 && p <= 100)) fail('errorThresholdPercentage', 'a number from 0 to 100');
  if (!isIntegerAtLeast(resolved.volumeThreshold, 0)) fail('volumeThreshold', 'an integer >= 0');
  if (!isIntegerAtLeast(resolved.rollingWindowMs, breakerDefaults.rollingWindowBuckets)) {
    fail('rollingWindowMs', `an integer >= ${breakerDefaults.rollingWindowBuckets}`);
  }
  if (!isIntegerAtLeast(resolved.resetTimeoutMs, 1)) fail('resetTimeoutMs', 'an integer >= 1');
  if (!isIntegerAtLeast(resolved.probeTimeoutMs, 1)) fail('probeTimeoutMs', 'an integer >= 1');
  return Object.freeze(resolved);
}

/** PX of the shared open key written at `nowMs` for an open lasting until `untilMs`. */
export function sharedStateTtlMs(options: ResolvedBreakerOptions, untilMs: number, nowMs: number): number {
  const marginMs = Math.max(breakerDefaults.sharedStateMarginMs, 3 * options.probeTimeoutMs);
  return Math.max(untilMs - nowMs, 0) + marginMs;
}

/**
 * Our names onto opossum's (lib/circuit.js of opossum 9). opossum only detects the failure rate here: its own
 * open → half-open timer is never relied on (the shared state decides), its timeout is off (Ferry enforces its
 * own whole-attempt deadline), and snapshots and percentiles are off (a timer and work per call we never read).
 */
export function toOpossumOptions(
  name: string,
  options: ResolvedBreakerOptions,
  /** opossum calls it with the error, then the arguments the call was fired with. */
  errorFilter: (error: unknown, ...firedWith: never[]) => boolean,
): CircuitBreaker.Options {
  return {
    name,
    // No timeout and no capacity limit: the detector relies on opossum refusing a call only when it is open or
    // shut down (see createFailureDetector). Ferry enforces its own whole-attempt deadline.
    timeout: false,
    errorThresholdPercentage: options.errorThresholdPercentage,
    volumeThreshold: options.volumeThreshold,
    rollingCountTimeout: options.rollingWindowMs,
    rollingCountBuckets: breakerDefaults.rollingWindowBuckets,
    resetTimeout: options.resetTimeoutMs,
    errorFilter,
    rollingPercentilesEnabled: false,
    enableSnapshots: false,
  };
}

function isIntegerAtLeast(value: number, min: number): boolean {
  return Number.isInteger(value) && value >= min;
}
