/**
 * A Server-Sent Events response on a Fastify reply (https://html.spec.whatwg.org/multipage/server-sent-events.html).
 *
 * The reply is hijacked: Fastify would otherwise wait for one payload and send it, where SSE writes for as long
 * as the client stays. Headers set on the reply before (request ids, CORS) are kept. The response opens on the
 * first write, so a route can still answer with an error until then.
 */
import type { OutgoingHttpHeaders } from 'node:http';

import type { FastifyReply } from 'fastify';

import { SECOND } from '../core/time.ts';

export interface SseOptions {
  /** A comment line this often, so that clients and proxies see a live connection. Default 15 s. */
  heartbeatMs?: number;
  /** Sent as `retry:` first: how long a client waits before it reconnects. Default: the client's own (3 s). */
  retryMs?: number;
  /**
   * Bytes a slow client may leave unread before its stream is ended (it reconnects with `Last-Event-ID` and
   * resumes), rather than buffering without bound. Default 1 MiB.
   */
  maxBufferedBytes?: number;
}

export const DEFAULT_HEARTBEAT_MS = 15 * SECOND;
const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;

export class SseStream {
  readonly #reply: FastifyReply;
  readonly #options: SseOptions;
  readonly #closeListeners: (() => void)[] = [];
  #opened = false;
  #closed = false;
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(reply: FastifyReply, options: SseOptions = {}) {
    this.#reply = reply;
    this.#options = options;
    // 'close' comes when the response ended or the client went away, whichever is first.
    reply.raw.on('close', () => this.#onClose());
    // A write racing a disconnect: the socket's error is this stream's end, not the process's.
    reply.raw.on('error', () => this.#onClose());
  }

  /** The response ended (by end() or by the client): nothing more is written. */
  get closed(): boolean {
    return this.#closed || this.#reply.raw.destroyed;
  }

  /** Runs once the stream is closed, for whatever reason; at once when it already is. */
  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.#closeListeners.push(listener);
  }

  /** Sends the status and headers now (else the first event or comment does). */
  open(): void {
    if (this.#opened || this.closed) return;
    this.#opened = true;
    const reply = this.#reply;
    reply.hijack();
    const kept: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(reply.getHeaders()))
      if (value !== undefined) kept[name] = value;
    reply.raw.writeHead(200, {
      ...kept,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // nginx buffers proxied responses unless told not to, which would hold events back.
      'x-accel-buffering': 'no',
    });
    const { retryMs, heartbeatMs = DEFAULT_HEARTBEAT_MS } = this.#options;
    this.#write(retryMs === undefined ? ': open\n\n' : `retry: ${retryMs}\n\n`);
    this.#heartbeat = setInterval(() => this.comment('heartbeat'), heartbeatMs);
    this.#heartbeat.unref();
  }

  /** One event; `data` is written as one JSON line. */
  send(id: string, event: string, data: unknown): void {
    this.#write(`id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  /** A comment line (`: text`), which clients ignore; line breaks become spaces. */
  comment(text: string): void {
    this.#write(`: ${text.replace(/[\r\n]+/g, ' ')}\n\n`);
  }

  /** Ends the response (after what was written reaches the client). */
  end(): void {
    if (this.closed) return;
    this.open();
    this.#closed = true;
    this.#reply.raw.end();
    this.#onClose();
  }

  #write(chunk: string): void {
    if (this.closed) return;
    this.open();
    const raw = this.#reply.raw;
    raw.write(chunk);
    if (raw.writableLength > (this.#options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES)) this.end();
  }

  #onClose(): void {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    const listeners = this.#closeListeners.splice(0);
    for (const listener of listeners) listener();
  }
}
