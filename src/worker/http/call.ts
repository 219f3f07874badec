import type { IncomingHttpHeaders } from 'node:http';

import { parseRetryAfter } from '../retry-after.ts';
import { type AbortReason, AttemptAbortedError, classifyError, classifyStatus } from './classify.ts';
import type { PoolSet } from './pools.ts';
import type { OutboundRequest } from './request.ts';
import { bodyExcerpt, readBodyCapped, readBodyPrefix } from './response.ts';

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
  const controller = new AttemptAbort();
  const timer = setTimeout(abortForTimeout, options.timeoutMs, controller);
  const outer = options.signal;
  if (outer !== undefined) {
    if (outer.aborted) controller.abort(new AttemptAbortedError(abortReasonOf(outer)));
    else followAbort(outer, controller);
  }
  try {
    const response = await pools.get(request.origin).request({
      path: request.path,
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal: controller,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
    if (response.statusCode >= 200 && response.statusCode < 300) {
      const raw = await readBodyCapped(
        response.body,
        response.headers,
        options.maxResponseBytes,
        response.statusCode,
      );
      return { status: response.statusCode, headers: response.headers, raw };
    }
    const raw = await readBodyPrefix(response.body);
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
    if (controller.aborted) throw classifyError(controller.reason);
    throw classifyError(error);
  } finally {
    clearTimeout(timer);
    if (outer !== undefined) unfollowAbort(outer, controller);
  }
}

/**
 * The calls in flight under each outer signal (the worker pool's one shutdown signal). One `abort` listener
 * per signal aborts them all: adding and removing a listener on an AbortSignal (an EventTarget) for every
 * call costs several µs each, a Set costs next to nothing.
 */
const followers = new WeakMap<AbortSignal, Set<AttemptAbort>>();

function followAbort(signal: AbortSignal, controller: AttemptAbort): void {
  let calls = followers.get(signal);
  if (calls === undefined) {
    const set = new Set<AttemptAbort>();
    calls = set;
    followers.set(signal, set);
    signal.addEventListener(
      'abort',
      () => {
        followers.delete(signal);
        const reason = abortReasonOf(signal);
        for (const call of set) call.abort(new AttemptAbortedError(reason));
        set.clear();
      },
      { once: true },
    );
  }
  calls.add(controller);
}

function unfollowAbort(signal: AbortSignal, controller: AttemptAbort): void {
  followers.get(signal)?.delete(controller);
}

/**
 * The abort signal of one call. undici takes any object with `aborted`, `reason` and EventEmitter-style
 * `on` / `once` / `removeListener` for 'abort' as a signal, and aborts with `reason` just as for an
 * AbortSignal. One is made per call: an AbortController (an EventTarget) costs several times more to create
 * and to add and remove undici's listener on, and so does an EventEmitter's `once` wrapper. undici adds one
 * listener per request; a list keeps any number correct.
 */
class AttemptAbort {
  aborted = false;
  reason: AttemptAbortedError | undefined;
  #listeners: (() => void)[] | undefined;

  on(_event: 'abort', listener: () => void): this {
    (this.#listeners ??= []).push(listener);
    return this;
  }

  once(event: 'abort', listener: () => void): this {
    // Listeners run at most once anyway: abort() happens once and drops them.
    return this.on(event, listener);
  }

  removeListener(_event: 'abort', listener: () => void): this {
    const listeners = this.#listeners;
    if (listeners !== undefined) {
      const at = listeners.indexOf(listener);
      if (at !== -1) listeners.splice(at, 1);
    }
    return this;
  }

  abort(reason: AttemptAbortedError): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = this.#listeners;
    this.#listeners = undefined;
    if (listeners !== undefined) for (const listener of listeners) listener();
  }
}

/** The whole-attempt timer's callback: one function for every call rather than a closure per call. */
function abortForTimeout(controller: AttemptAbort): void {
  controller.abort(new AttemptAbortedError('timeout'));
}

function abortReasonOf(signal: AbortSignal | undefined): AbortReason {
  const reason: unknown = signal?.reason;
  if (reason instanceof AttemptAbortedError) return reason.reason;
  return reason === 'shutdown' ? 'shutdown' : 'cancelled';
}
