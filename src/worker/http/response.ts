import type { IncomingHttpHeaders } from 'node:http';

import { RESULT_HEADERS } from '../../core/result-headers.ts';
import type { Scrubber } from '../../secrets/scrub.ts';

/**
 * A result's body is capped below the response cap: it is stored in Redis with the completed job. (A
 * `[redacted]` the cap would split is kept whole, so a body may pass it by 9 characters.)
 */
export const RESULT_BODY_MAX_CHARS = 64 * 1024;

export function allowListedHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  // Walks the response's few headers rather than the fifteen allowed names (undici's names are lower-case).
  const out: Record<string, string> = {};
  for (const name in headers) {
    if (!RESULT_HEADERS.has(name)) continue;
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

/**
 * Parses JSON when the response says it is JSON and it parses; otherwise keeps text. Never throws. The body
 * comes back scrubbed of every value `scrubber` knows: a text over the cap is scrubbed before it is cut, so
 * a value the cut runs through is replaced whole, and a value's first characters left at the cut are redacted.
 */
export function parseBody(raw: Buffer, contentType: string | undefined, scrubber: Scrubber): ParsedBody {
  if (raw.length === 0) return { body: null, truncated: false };
  const text = raw.toString('utf8');
  if (contentType !== undefined && /[/+]json\b/i.test(contentType) && text.length <= RESULT_BODY_MAX_CHARS) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text) as unknown;
    } catch {
      // Not JSON after all: kept as text.
    }
    // Scrubbed once parsed: a value JSON-escaped in the text is plain in the parsed strings.
    if (parsed !== undefined) return { body: scrubber.scrubValue(parsed), truncated: false };
  }
  const kept = scrubber.scrubAndCut(text, RESULT_BODY_MAX_CHARS);
  return { body: kept.text, truncated: kept.truncated };
}

/**
 * A short, single-line excerpt of an error body for messages (dead letters, logs), scrubbed. Scrubbing comes
 * first: cutting the text or collapsing its whitespace first would leave a value's first characters, or a
 * value with a double space, that no longer matches. `raw` longer than ERROR_BODY_MAX_BYTES was cut by the
 * read: what is past that is never looked at, and a value's start at the cut is redacted.
 */
export function bodyExcerpt(raw: Buffer, scrubber: Scrubber, maxChars = 300): string {
  const wasCut = raw.length > ERROR_BODY_MAX_BYTES;
  let text = scrubber.scrub((wasCut ? raw.subarray(0, ERROR_BODY_MAX_BYTES) : raw).toString('utf8'));
  if (wasCut) text = scrubber.redactCutTail(text);
  const excerpt = scrubber.scrubAndCut(text.replace(/\s+/g, ' ').trim(), maxChars);
  return excerpt.truncated ? `${excerpt.text}…` : excerpt.text;
}
