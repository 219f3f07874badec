import type { IncomingHttpHeaders } from 'node:http';

/** Response headers worth keeping in a result; everything else (cookies, auth echoes) is dropped. */
const ALLOWED_HEADERS: ReadonlySet<string> = new Set([
  'content-type',
  'content-length',
  'location',
  'etag',
  'last-modified',
  'retry-after',
  'x-request-id',
  'request-id',
  'x-correlation-id',
  'x-ratelimit-limit',
  'x-ratelimit-remaining',
  'x-ratelimit-reset',
  'ratelimit-limit',
  'ratelimit-remaining',
  'ratelimit-reset',
]);

/** A result's body is capped below the response cap: it is stored in Redis with the completed job. */
export const RESULT_BODY_MAX_CHARS = 64 * 1024;

export function allowListedHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  // Walks the response's few headers rather than the fifteen allowed names (undici's names are lower-case).
  const out: Record<string, string> = {};
  for (const name in headers) {
    if (!ALLOWED_HEADERS.has(name)) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** Bytes of a non-2xx body kept for the error message; the rest is never read. */
export const ERROR_BODY_MAX_BYTES = 4 * 1024;

export interface ParsedBody {
  body: unknown;
  truncated: boolean;
}

/** Parses JSON when the response says it is JSON and it parses; otherwise keeps text. Never throws. */
export function parseBody(raw: Buffer, contentType: string | undefined): ParsedBody {
  if (raw.length === 0) return { body: null, truncated: false };
  const text = raw.toString('utf8');
  if (contentType !== undefined && /[/+]json\b/i.test(contentType) && text.length <= RESULT_BODY_MAX_CHARS) {
    try {
      return { body: JSON.parse(text) as unknown, truncated: false };
    } catch {
      // Not JSON after all: keep it as text.
    }
  }
  if (text.length > RESULT_BODY_MAX_CHARS)
    return { body: text.slice(0, RESULT_BODY_MAX_CHARS), truncated: true };
  return { body: text, truncated: false };
}

/** A short, single-line excerpt of an error body for messages (dead letters, logs). */
export function bodyExcerpt(raw: Buffer, maxChars = 300): string {
  const text = raw
    .subarray(0, maxChars * 4)
    .toString('utf8')
    .replace(/\s+/g, ' ')
    .trim();
  return text.length > maxChars ? `${text.slice(0, maxChars)}…` : text;
}
