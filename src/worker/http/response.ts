import type { IncomingHttpHeaders } from 'node:http';

import { ResponseTooLargeError } from '../../core/errors.ts';

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

interface BodyStream extends AsyncIterable<Buffer> {
  destroy(error?: Error): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  once(event: 'end', listener: () => void): unknown;
  once(event: 'error', listener: (error: Error) => void): unknown;
  once(event: 'close', listener: () => void): unknown;
  off(event: 'data', listener: (chunk: Buffer) => void): unknown;
  off(event: 'end', listener: () => void): unknown;
}

/** Bytes of a non-2xx body kept for the error message; the rest is never read. */
export const ERROR_BODY_MAX_BYTES = 4 * 1024;

function ignore(): void {}

/**
 * Stops reading a body. undici's body emits `error` (RequestAbortedError) when destroyed: with no listener,
 * that is an uncaught exception that kills the worker process and every job in it.
 */
function discard(body: BodyStream): void {
  body.on('error', ignore);
  body.destroy();
}

/**
 * Reads a response body under a byte cap. A declared length over the cap fails before reading; a body that
 * grows past it is destroyed at once, so a hostile or broken downstream cannot fill the worker's memory.
 */
export async function readBodyCapped(
  body: BodyStream,
  headers: IncomingHttpHeaders,
  maxBytes: number,
  status: number,
): Promise<Buffer> {
  const declared = Number(headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    discard(body);
    throw new ResponseTooLargeError(`response declared ${declared} bytes, over the ${maxBytes}-byte cap`, {
      status,
    });
  }
  // 'data' / 'end' listeners rather than `for await`: in the throughput bench's profile the stream's async
  // iterator (and the end-of-stream machinery behind it) cost several µs per response, the most of anything
  // on a small body's way in.
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        body.off('data', onData);
        body.off('end', onEnd);
        discard(body);
        reject(new ResponseTooLargeError(`response exceeded the ${maxBytes}-byte cap`, { status }));
        return;
      }
      chunks.push(chunk);
    };
    let ended = false;
    const onEnd = (): void => {
      ended = true;
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', reject);
    // A socket that closes mid-body without an error. 'close' follows every 'end' too: building the Error
    // there anyway (a stack trace per response) was the largest single cost in the bench's profile.
    body.once('close', () => {
      if (!ended) reject(new Error('the response body ended early (connection closed)'));
    });
  });
}

/**
 * The first `maxBytes` of an error response, for its message. A 502 page of any size is still a 502: it must
 * be classified by its status (retryable, counted by the breaker), never as ResponseTooLargeError.
 */
export async function readBodyPrefix(body: BodyStream, maxBytes = ERROR_BODY_MAX_BYTES): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= maxBytes) {
      discard(body);
      break;
    }
  }
  const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
  return all.subarray(0, maxBytes);
}

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
