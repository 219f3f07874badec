import type { IncomingHttpHeaders } from 'node:http';

import type { Dispatcher } from 'undici';

import { type FerryError, ResponseTooLargeError, ValidationError } from '../../core/errors.ts';
import { HEADER_VALUE_FORBIDDEN } from '../../core/job.ts';
import type { Scrubber } from '../../secrets/scrub.ts';
import { readRetryAfter, type RetryAfterClampedListener } from '../retry-after.ts';
import { type AbortReason, AttemptAbortedError, classifyError, classifyStatus } from './classify.ts';
import type { PoolSet } from './pools.ts';
import type { OutboundRequest } from './request.ts';
import { bodyExcerpt, ERROR_BODY_MAX_BYTES } from './response.ts';
import { classifyTlsError, type Transport } from './transport.ts';

export interface CallOptions {
  /**
   * Whole attempt: waiting for a socket + connect + headers + body. When it passes the call settles and the
   * request is aborted (a socket still connecting goes on to connect or fail, bounded by the pool's
   * connectTimeout, and then serves the next call).
   */
  timeoutMs: number;
  maxResponseBytes: number;
  /** Longest Retry-After honoured (the service's `retry.maxRetryAfterMs`); longer ones are clamped to it. */
  maxRetryAfterMs: number;
  /** Told when a 429/503 asked for a longer Retry-After than maxRetryAfterMs. */
  onRetryAfterClamped?: RetryAfterClampedListener | undefined;
  /** Aborted by the worker on shutdown past its deadline. */
  signal: AbortSignal | undefined;
  now: () => number;
  /**
   * Scrubs the excerpt of an error body before it is cut and its whitespace collapsed (in the message it would
   * be too late: a value cut at the excerpt's end, or with a double space, no longer matches).
   */
  scrubber: Scrubber;
  /** The job's proxy and TLS material (issue 17); default: the env's proxy, Node's TLS defaults. */
  transport?: Transport | undefined;
}

export interface CallResponse {
  status: number;
  headers: IncomingHttpHeaders;
  raw: Buffer;
}

/**
 * One HTTP call. Resolves with a 2xx response and its whole body; rejects with a classified FerryError
 * otherwise. undici's body timeout restarts on every chunk, so a slow-drip response is bounded by our own
 * whole-attempt timer.
 */
export function callDownstream(
  pools: PoolSet,
  request: OutboundRequest,
  options: CallOptions,
): Promise<CallResponse> {
  // Every header, whatever filled it (a secret, a token endpoint's answer, a raw producer's key), is checked
  // here, the one place all calls pass: undici must never see a value it refuses (core/job.ts says why).
  for (const name in request.headers) {
    if (HEADER_VALUE_FORBIDDEN.test(request.headers[name]!)) {
      return Promise.reject(
        new ValidationError(
          `header ${name}: its value holds a control character or one above U+00FF; refused before sending`,
          { field: `headers.${name}` },
        ),
      );
    }
  }
  return new Promise<CallResponse>((resolve, reject) => {
    const pool = pools.get(request.origin, options.transport);
    const call = new DownstreamCall(options, resolve, reject);
    // Aborted before it started (shutdown already under way): no socket is taken for it.
    if (call.settled) return;
    pool.dispatch(
      {
        // A proxy agent routes by it; a pool ignores it.
        origin: request.origin,
        path: request.path,
        method: request.method,
        headers: request.headers,
        body: request.body,
        headersTimeout: options.timeoutMs,
        bodyTimeout: options.timeoutMs,
      },
      call,
    );
  });
}

/**
 * One call as an undici dispatch handler rather than through `request()`: the body arrives as chunks in
 * onResponseData and is kept under the byte cap right there. `request()` puts a Readable stream, an
 * AsyncResource and an abort-signal adapter between the socket and those chunks, the largest cost of a call
 * with a small body in the throughput bench (bench/HISTORY.md, item 20), and its abort only takes effect
 * once a queued request gets a socket; this call settles the moment Ferry aborts it.
 *
 * Settles exactly once; whatever undici reports after that (the error of an abort Ferry made, say) is ignored.
 */
class DownstreamCall implements Dispatcher.DispatchHandler {
  readonly #options: CallOptions;
  readonly #resolve: (response: CallResponse) => void;
  readonly #reject: (error: FerryError) => void;
  readonly #timer: NodeJS.Timeout;
  #controller: Dispatcher.DispatchController | undefined;
  /** Why Ferry aborted the call, once it has: undici is told when the request starts, if not before. */
  #abortedWith: AttemptAbortedError | undefined;
  #settled = false;
  #status = 0;
  /** 2xx: the body is the result, read whole under the cap. Otherwise only an excerpt is read. */
  #ok = false;
  #headers: IncomingHttpHeaders = {};
  #chunks: Buffer[] = [];
  #size = 0;
  /** Bytes to read at most: the response cap for a 2xx, the error excerpt's source otherwise. */
  #limit = 0;

  constructor(
    options: CallOptions,
    resolve: (response: CallResponse) => void,
    reject: (error: FerryError) => void,
  ) {
    this.#options = options;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#timer = setTimeout(abortForTimeout, options.timeoutMs, this);
    const outer = options.signal;
    if (outer !== undefined) {
      if (outer.aborted) this.abort(new AttemptAbortedError(abortReasonOf(outer)));
      else followAbort(outer, this);
    }
  }

  get settled(): boolean {
    return this.#settled;
  }

  /** Ferry's own abort (whole-attempt timeout, shutdown): the call rejects now, whatever undici is doing. */
  abort(reason: AttemptAbortedError): void {
    if (this.#settled) return;
    this.#abortedWith = reason;
    this.#fail(classifyError(reason));
    this.#controller?.abort(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // Aborted while the request waited for a free socket: drop it before anything is sent. Thrown rather than
    // controller.abort(): undici then fails only this request (client-h1 catches a throw from onConnect) and
    // keeps the healthy keep-alive socket, where an abort would destroy it. call.test.ts pins this.
    if (this.#abortedWith !== undefined) throw this.#abortedWith;
    this.#controller = controller;
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    if (this.#settled) return;
    this.#status = statusCode;
    this.#headers = headers;
    this.#ok = statusCode >= 200 && statusCode < 300;
    if (!this.#ok) {
      // A 502 page of any size is still a 502: classified by its status, never as ResponseTooLargeError.
      this.#limit = ERROR_BODY_MAX_BYTES;
      return;
    }
    const max = this.#options.maxResponseBytes;
    this.#limit = max;
    const declared = Number(headers['content-length']);
    if (Number.isFinite(declared) && declared > max)
      this.#refuse(controller, `response declared ${declared} bytes, over the ${max}-byte cap`);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    if (this.#ok) {
      // Stopped at once, so a hostile or broken downstream cannot fill the worker's memory.
      if (this.#size > this.#limit) this.#refuse(controller, `response exceeded the ${this.#limit}-byte cap`);
    } else if (this.#size > this.#limit) {
      // More than enough of the error page for its message; the rest is never read. (Strictly more: an error
      // body of exactly the excerpt's size has ended, and its connection is kept.)
      this.#complete();
      controller.abort(new Error('error response read up to its excerpt'));
    }
  }

  onResponseEnd(): void {
    if (!this.#settled) this.#complete();
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    if (!this.#settled) this.#fail(classifyTlsError(error) ?? classifyError(error));
  }

  #complete(): void {
    const chunks = this.#chunks;
    const raw = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#size);
    const status = this.#status;
    if (this.#ok) {
      this.#settle();
      this.#resolve({ status, headers: this.#headers, raw });
      return;
    }
    const retryAfter =
      status === 429 || status === 503
        ? readRetryAfter(this.#headers['retry-after'], this.#options.now(), this.#options.maxRetryAfterMs)
        : undefined;
    if (retryAfter !== undefined && retryAfter.askedMs > retryAfter.delayMs)
      this.#options.onRetryAfterClamped?.(retryAfter.askedMs, retryAfter.delayMs);
    const error = classifyStatus(status, retryAfter?.delayMs);
    const excerpt = bodyExcerpt(raw, this.#options.scrubber);
    if (excerpt !== '') error.message = `${error.message}: ${excerpt}`;
    this.#fail(error);
  }

  #refuse(controller: Dispatcher.DispatchController, message: string): void {
    const error = new ResponseTooLargeError(message, { status: this.#status });
    this.#fail(error);
    controller.abort(error);
  }

  #fail(error: FerryError): void {
    this.#settle();
    this.#reject(error);
  }

  #settle(): void {
    this.#settled = true;
    clearTimeout(this.#timer);
    const outer = this.#options.signal;
    if (outer !== undefined) unfollowAbort(outer, this);
  }
}

/**
 * The calls in flight under each outer signal (the worker pool's one shutdown signal). One `abort` listener
 * per signal aborts them all: adding and removing a listener on an AbortSignal (an EventTarget) for every
 * call costs several µs each, a Set costs next to nothing.
 */
const followers = new WeakMap<AbortSignal, Set<DownstreamCall>>();

function followAbort(signal: AbortSignal, call: DownstreamCall): void {
  let calls = followers.get(signal);
  if (calls === undefined) {
    const set = new Set<DownstreamCall>();
    calls = set;
    followers.set(signal, set);
    signal.addEventListener(
      'abort',
      () => {
        followers.delete(signal);
        const reason = abortReasonOf(signal);
        for (const each of set) each.abort(new AttemptAbortedError(reason));
        set.clear();
      },
      { once: true },
    );
  }
  calls.add(call);
}

function unfollowAbort(signal: AbortSignal, call: DownstreamCall): void {
  followers.get(signal)?.delete(call);
}

/** The whole-attempt timer's callback: one function for every call rather than a closure per call. */
function abortForTimeout(call: DownstreamCall): void {
  call.abort(new AttemptAbortedError('timeout'));
}

function abortReasonOf(signal: AbortSignal | undefined): AbortReason {
  const reason: unknown = signal?.reason;
  if (reason instanceof AttemptAbortedError) return reason.reason;
  return reason === 'shutdown' ? 'shutdown' : 'cancelled';
}
