import type { IncomingHttpHeaders } from 'node:http';

import { parseRetryAfter } from '../retry-after.ts';
import { type AbortReason, AttemptAbortedError, classifyError, classifyStatus } from './classify.ts';
import type { PoolSet } from './pools.ts';
import type { OutboundRequest } from './request.ts';
import { bodyExcerpt, readBodyCapped } from './response.ts';

export interface CallOptions {
  /** Whole attempt: connect + headers + body. The request is really aborted when it passes. */
  timeoutMs: number;
  maxResponseBytes: number;
  maxRetryAfterMs: number;
  /** Aborted by the worker on shutdown past its deadline. */
  signal: AbortSignal | undefined;
  now: () => number;
}

export interface CallResponse {
  status: number;
  headers: IncomingHttpHeaders;
  raw: Buffer;
}

/**
 * One HTTP call. Resolves with a 2xx response; rejects with a classified FerryError otherwise. undici's
 * body timeout restarts on every chunk, so a slow-drip response is bounded by our own whole-attempt timer.
 */
export async function callDownstream(
  pools: PoolSet,
  request: OutboundRequest,
  options: CallOptions,
): Promise<CallResponse> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new AttemptAbortedError('timeout')), options.timeoutMs);
  const onOuterAbort = (): void => controller.abort(new AttemptAbortedError(abortReasonOf(options.signal)));
  if (options.signal?.aborted === true) onOuterAbort();
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  try {
    const response = await pools.get(request.origin).request({
      path: request.path,
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal: controller.signal,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
    const raw = await readBodyCapped(
      response.body,
      response.headers,
      options.maxResponseBytes,
      response.statusCode,
    );
    if (response.statusCode >= 200 && response.statusCode < 300) {
      return { status: response.statusCode, headers: response.headers, raw };
    }
    const retryAfterMs =
      response.statusCode === 429 || response.statusCode === 503
        ? parseRetryAfter(response.headers['retry-after'], options.now(), options.maxRetryAfterMs)
        : undefined;
    const error = classifyStatus(response.statusCode, retryAfterMs);
    const excerpt = bodyExcerpt(raw);
    if (excerpt !== '') error.message = `${error.message}: ${excerpt}`;
    throw error;
  } catch (error) {
    // Whatever undici threw on abort, the reason we aborted with is the truth.
    if (controller.signal.aborted) throw classifyError(controller.signal.reason);
    throw classifyError(error);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
}

function abortReasonOf(signal: AbortSignal | undefined): AbortReason {
  const reason: unknown = signal?.reason;
  if (reason instanceof AttemptAbortedError) return reason.reason;
  return reason === 'shutdown' ? 'shutdown' : 'cancelled';
}
