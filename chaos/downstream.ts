/**
 * The downstream every chaos scenario points its services at: an HTTP server on 127.0.0.1:0 that records each
 * call (the job id from the path, its Idempotency-Key, when) and lets the scenario answer it, and the count of
 * repeated calls and of jobs whose repeats carried differing keys.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';

import type { Lab } from './lab.ts';

export interface RecordedCall {
  /** The job id from the path (`/jobs/<id>`), or the whole path when it has another shape. */
  jobId: string;
  path: string;
  /** The Idempotency-Key header as sent; `undefined` when none. */
  key: string | undefined;
  at: number;
}

/**
 * Answers one call, once its request body is in; `index` counts every call so far (0-based), `nth` the calls
 * for this job (1-based). The body is handed over, never kept.
 */
export type DownstreamHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  call: RecordedCall & { index: number; nth: number; body: Buffer },
) => void;

export interface CountingDownstream {
  readonly url: string;
  readonly calls: RecordedCall[];
  handle(handler: DownstreamHandler): void;
  close(): Promise<void>;
}

export interface Reply {
  status: number;
  /** On top of `content-type: application/json`. */
  headers?: Record<string, string>;
  body?: string | Buffer;
}

/** Writes `reply` unless the caller already hung up. */
export function reply(res: ServerResponse, { status, headers, body }: Reply): void {
  if (res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(body ?? '');
}

/** `200 {"ok":true}` after `delayMs`. */
export function answerOk(delayMs = 0): DownstreamHandler {
  return (_req, res) => {
    const send = (): void => reply(res, { status: 200, body: '{"ok":true}' });
    if (delayMs > 0) setTimeout(send, delayMs);
    else send();
  };
}

/** A request as a script sees it: what was sent, the body as text. */
export interface DownstreamRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A handler from a function of the request to its reply; a script that throws is a 500. */
export function answering(script: (request: DownstreamRequest) => Reply): DownstreamHandler {
  return (req, res, call) => {
    let answer: Reply;
    try {
      answer = script({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: call.body.toString('utf8'),
      });
    } catch (error) {
      answer = { status: 500, body: `downstream script failed: ${(error as Error).message}` };
    }
    reply(res, answer);
  };
}

/** A downstream on 127.0.0.1:0 that records every call before the handler answers it; closed at cleanup. */
export async function startDownstream(
  lab: Lab,
  initial: DownstreamHandler = answerOk(),
): Promise<CountingDownstream> {
  let handler = initial;
  const calls: RecordedCall[] = [];
  const perJob = new Map<string, number>();
  const server = createServer((req, res) => {
    const path = req.url ?? '';
    const match = /^\/jobs\/([^/?#]+)/.exec(path);
    const jobId = match === null ? path : decodeURIComponent(match[1]!);
    const header = req.headers['idempotency-key'];
    const call: RecordedCall = {
      jobId,
      path,
      key: Array.isArray(header) ? header.join(',') : header,
      at: Date.now(),
    };
    const index = calls.push(call) - 1;
    const nth = (perJob.get(jobId) ?? 0) + 1;
    perJob.set(jobId, nth);
    // A write to a socket the worker closed must not crash the runner.
    res.on('error', () => undefined);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => handler(req, res, { ...call, index, nth, body: Buffer.concat(chunks) }));
  });
  server.on('connection', (socket) => socket.on('error', () => undefined));
  server.keepAliveTimeout = 5_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
    return closed;
  };
  lab.defer(close);
  return {
    url: `http://127.0.0.1:${address.port}`,
    calls,
    handle(next) {
      handler = next;
    },
    close,
  };
}

export interface CallStats {
  /** Calls beyond the first for each job that was called at all. */
  duplicateCalls: number;
  /** Jobs whose calls carried more than one distinct Idempotency-Key (a missing key counts as one). */
  duplicatesWithDifferingKeys: number;
  /** Jobs called at least once. */
  jobsCalled: number;
}

export function callStats(calls: readonly RecordedCall[], jobIds?: ReadonlySet<string>): CallStats {
  const byJob = new Map<string, { count: number; keys: Set<string> }>();
  for (const call of calls) {
    if (jobIds !== undefined && !jobIds.has(call.jobId)) continue;
    const entry = byJob.get(call.jobId) ?? { count: 0, keys: new Set<string>() };
    entry.count++;
    entry.keys.add(call.key ?? '(none)');
    byJob.set(call.jobId, entry);
  }
  let duplicateCalls = 0;
  let differing = 0;
  for (const entry of byJob.values()) {
    duplicateCalls += entry.count - 1;
    if (entry.keys.size > 1) differing++;
  }
  return { duplicateCalls, duplicatesWithDifferingKeys: differing, jobsCalled: byJob.size };
}
