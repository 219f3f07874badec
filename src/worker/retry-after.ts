/**
 * Parses a Retry-After header (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. Returns milliseconds from
 * `nowMs`, clamped to [0, maxMs], or undefined when absent or unparseable (a garbage header must not turn
 * into "retry now" or "wait forever").
 */
export function parseRetryAfter(
  header: string | string[] | undefined,
  nowMs: number,
  maxMs: number,
): number | undefined {
  return readRetryAfter(header, nowMs, maxMs)?.delayMs;
}

export interface RetryAfter {
  /** The wait honoured: what was asked, clamped to [0, maxMs]. */
  delayMs: number;
  /** The wait the downstream asked for (>= 0); more than `delayMs` when it was clamped. */
  askedMs: number;
}

/** parseRetryAfter with the wait that was asked for, so a clamped one can be reported. */
export function readRetryAfter(
  header: string | string[] | undefined,
  nowMs: number,
  maxMs: number,
): RetryAfter | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (trimmed === '') return undefined;
  let delayMs: number;
  if (/^\d+$/.test(trimmed)) {
    delayMs = Number(trimmed) * 1000;
  } else {
    // Date.parse accepts far more than HTTP-dates ("-5" is year -5): require a day or month name.
    if (!/[A-Za-z]{3}/.test(trimmed)) return undefined;
    const date = Date.parse(trimmed);
    if (Number.isNaN(date)) return undefined;
    delayMs = date - nowMs;
  }
  // `Number('9'.repeat(400))` is Infinity: report the largest finite number instead, so it logs as JSON.
  const askedMs = Math.min(Math.max(delayMs, 0), Number.MAX_SAFE_INTEGER);
  return { delayMs: Math.min(askedMs, maxMs), askedMs };
}

/** Called when a downstream asked for a longer Retry-After than the service honours. */
export type RetryAfterClampedListener = (askedMs: number, appliedMs: number) => void;

export interface RetryAfterWarningOptions {
  service: string;
  maxRetryAfterMs: number;
  logger: { warn(fields: Record<string, unknown>, message: string): void };
  now: () => number;
  /** At most one line per this interval; the ones in between are counted in the next line. Default 1 min. */
  intervalMs?: number;
}

const WARNING_INTERVAL_MS = 60_000;

/**
 * A listener that warns when a downstream asks to be left alone longer than `retry.maxRetryAfterMs` (a
 * `Retry-After: 99999` held the whole service for the old 1 h cap, issue 13): the operator should know the
 * service is being called earlier than it asked. One line per service per interval, not one per job, since
 * a flood of such answers is exactly when it happens; a line says how many it stands for.
 */
export function createRetryAfterWarning(options: RetryAfterWarningOptions): RetryAfterClampedListener {
  const intervalMs = options.intervalMs ?? WARNING_INTERVAL_MS;
  let lastAtMs = -Infinity;
  let unreported = 0;
  return (askedMs, appliedMs) => {
    unreported++;
    const nowMs = options.now();
    if (nowMs - lastAtMs < intervalMs) return;
    lastAtMs = nowMs;
    options.logger.warn(
      {
        service: options.service,
        askedMs,
        appliedMs,
        maxRetryAfterMs: options.maxRetryAfterMs,
        occurrences: unreported,
      },
      `downstream asked for Retry-After ${askedMs} ms, longer than retry.maxRetryAfterMs: holding the service for ${appliedMs} ms only`,
    );
    unreported = 0;
  };
}
