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
  return Math.min(Math.max(delayMs, 0), maxMs);
}
