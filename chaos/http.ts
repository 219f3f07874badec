/**
 * Talking to a running `ferry api`: raw requests over node:http (so a path like `/v1/jobs/svc/../x` is sent as
 * written, not normalised the way fetch's URL parser would), enqueueing at a steady rate with a tally of the
 * answers, and reading jobs' states back over the API.
 */
import { type IncomingHttpHeaders, request as httpRequest } from 'node:http';

import { CHAOS_TOKEN } from './ferry.ts';
import type { AcceptedJob } from './jobs.ts';
import { mapLimit, sleep } from './lab.ts';

export interface RawAnswer {
  /** The status; 0 when no answer came (connection refused or reset, or the timeout). */
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** Why no answer came. */
  error?: string;
}

export interface RawRequest {
  method: string;
  /** Sent exactly as given (no URL normalisation). */
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  timeoutMs?: number;
  /**
   * For event streams: once the headers are in, read `streamMs` more of the body (default 0), then hang up.
   * A body that ends earlier ends the read.
   */
  streamMs?: number;
  /** Stop reading the body beyond this many bytes (the status is what matters). Default 4 MiB. */
  maxBodyBytes?: number;
  /** Hang up when this aborts (a long event stream read until the scenario is done with it). */
  signal?: AbortSignal;
}

/** One request over node:http on 127.0.0.1; never throws (a failure is status 0 with `error`). */
export function rawRequest(port: number, options: RawRequest): Promise<RawAnswer> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const maxBodyBytes = options.maxBodyBytes ?? 4 * 1024 * 1024;
  return new Promise((resolve) => {
    let settled = false;
    const chunks: Buffer[] = [];
    let size = 0;
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    const finish = (error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(streamTimer);
      req.destroy();
      resolve({
        status,
        headers,
        text: Buffer.concat(chunks).toString('utf8'),
        ...(error === undefined ? {} : { error }),
      });
    };
    let streamTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(
      () => finish(status === 0 ? `no answer within ${timeoutMs} ms` : undefined),
      timeoutMs,
    );
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: options.method,
        path: options.path,
        headers: {
          ...(options.body === undefined
            ? {}
            : { 'content-length': String(Buffer.byteLength(options.body)) }),
          ...options.headers,
        },
        agent: false,
      },
      (res) => {
        status = res.statusCode ?? 0;
        headers = res.headers;
        if (options.streamMs !== undefined) {
          streamTimer = setTimeout(() => finish(), options.streamMs);
        }
        res.on('data', (chunk: Buffer) => {
          if (size >= maxBodyBytes) return;
          chunks.push(chunk);
          size += chunk.length;
        });
        res.on('end', () => finish());
        res.on('error', () => finish());
        res.on('close', () => finish());
      },
    );
    req.on('error', (error) => finish(status === 0 ? error.message : undefined));
    options.signal?.addEventListener('abort', () => finish(), { once: true });
    if (options.body !== undefined) req.end(options.body);
    else req.end();
  });
}

/** `rawRequest` with a bearer token and a JSON body; the answer parsed when it is JSON. */
export async function jsonRequest(
  port: number,
  method: string,
  path: string,
  token: string | undefined,
  body?: unknown,
  extraHeaders: Record<string, string> = {},
): Promise<RawAnswer & { json: unknown }> {
  const headers: Record<string, string> = { ...extraHeaders };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const answer = await rawRequest(port, {
    method,
    path,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  let json: unknown;
  try {
    json = answer.text === '' ? undefined : JSON.parse(answer.text);
  } catch {
    json = undefined;
  }
  return { ...answer, json };
}

/** Tally of what the API answered. */
export interface ApiTally {
  accepted: AcceptedJob[];
  /** 5xx answers that are not a 503 with Retry-After (a 503 + Retry-After is the promised answer while Redis is down). */
  serverErrors: number;
  /** 503 + Retry-After answers. */
  unavailable: number;
  /** 4xx answers (none expected from a chaos enqueue). */
  clientErrors: number;
  /** Requests that got no HTTP answer at all (refused, reset, timed out by the client). */
  noAnswer: number;
  /** Slowest answer, in ms (a 503 must come promptly, not after a hang). */
  slowestMs: number;
  /** The first few unexpected answers, for the notes. */
  samples: string[];
}

export function emptyTally(): ApiTally {
  return {
    accepted: [],
    serverErrors: 0,
    unavailable: 0,
    clientErrors: 0,
    noAnswer: 0,
    slowestMs: 0,
    samples: [],
  };
}

/** POSTs one job to `url/v1/jobs`; counts the answer into `tally`. The client gives up after `timeoutMs`. */
export async function enqueueOverApi(
  url: string,
  tally: ApiTally,
  job: { service: string; operation: string; input?: unknown; idempotencyKey?: string },
  timeoutMs = 15_000,
): Promise<void> {
  const started = performance.now();
  try {
    const response = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CHAOS_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(job),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    tally.slowestMs = Math.max(tally.slowestMs, Math.round(performance.now() - started));
    if (response.status === 200 || response.status === 202) {
      const body = JSON.parse(text) as { id: string };
      tally.accepted.push({ service: job.service, id: body.id });
    } else if (response.status === 503 && response.headers.get('retry-after') !== null) {
      tally.unavailable++;
    } else if (response.status >= 500) {
      tally.serverErrors++;
      if (tally.samples.length < 3) tally.samples.push(`${response.status} ${text.slice(0, 120)}`);
    } else {
      tally.clientErrors++;
      if (tally.samples.length < 3) tally.samples.push(`${response.status} ${text.slice(0, 120)}`);
    }
  } catch (error) {
    tally.slowestMs = Math.max(tally.slowestMs, Math.round(performance.now() - started));
    tally.noAnswer++;
    if (tally.samples.length < 3)
      tally.samples.push(`no answer: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * Enqueues `operation` jobs at about `perSecond` until `stop()` (at most `max` jobs), `parallel` requests at a
 * time; `done` resolves when the last request has its answer.
 */
export function steadyEnqueue(options: {
  url: string;
  tally: ApiTally;
  service: string;
  operation: string;
  perSecond: number;
  max: number;
  parallel?: number;
}): { stop(): void; done: Promise<void> } {
  let stopped = false;
  let sent = 0;
  const parallel = options.parallel ?? 4;
  const gapMs = (1000 / options.perSecond) * parallel;
  const lane = async (laneIndex: number): Promise<void> => {
    while (!stopped && sent < options.max) {
      const n = sent++;
      const started = performance.now();
      await enqueueOverApi(options.url, options.tally, {
        service: options.service,
        operation: options.operation,
        input: { n, lane: laneIndex },
      });
      const left = gapMs - (performance.now() - started);
      if (left > 0 && !stopped) await sleep(left);
    }
  };
  const done = Promise.all(Array.from({ length: parallel }, (_, i) => lane(i))).then(() => undefined);
  return {
    stop() {
      stopped = true;
    },
    done,
  };
}

/** The terminal state of each job, read over the API: `completed`, `dead_lettered`, or what it still is. */
export async function settleJobs(
  port: number,
  token: string,
  jobs: readonly { service: string; id: string }[],
  timeoutMs: number,
): Promise<Map<string, string>> {
  const states = new Map<string, string>();
  const key = (job: { service: string; id: string }): string => `${job.service}/${job.id}`;
  const deadline = Date.now() + timeoutMs;
  let pending = [...jobs];
  while (pending.length > 0) {
    const next: typeof pending = [];
    await mapLimit(pending, 8, async (job) => {
      const answer = await jsonRequest(
        port,
        'GET',
        `/v1/jobs/${encodeURIComponent(job.service)}/${encodeURIComponent(job.id)}`,
        token,
      );
      const state =
        answer.status === 200 ? String((answer.json as { state?: unknown }).state) : `http-${answer.status}`;
      states.set(key(job), state);
      if (state !== 'completed' && state !== 'dead_lettered') next.push(job);
    });
    pending = next;
    if (pending.length === 0 || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return states;
}

/** A row field for a count: how many of `states` are `state`. */
export function countStates(states: Map<string, string>, state: string): number {
  let count = 0;
  for (const value of states.values()) if (value === state) count++;
  return count;
}
