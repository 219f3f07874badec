/**
 * What the attack scenarios (api-fuzz, authz-matrix, secret-scan) share: a private redis-server in a temp dir,
 * `ferry api` and `ferry worker` spawned from the built dist/ with a clean environment, a downstream on
 * 127.0.0.1, raw HTTP requests (node:http, so a path like `/v1/jobs/svc/../x` is sent as written, not
 * normalised the way fetch's URL parser would), a seeded PRNG and a cleanup stack.
 *
 * Nothing here registers vitest hooks: the scenarios run under `npm run chaos` (no test runner) as well as
 * under the smoke test, so every resource is closed by the scenario's own `Cleanup`.
 */
import { randomUUID } from 'node:crypto';
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as httpRequest,
  type ServerResponse,
} from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Redis } from 'ioredis';

import { startPrivateRedis } from '../src/cli/redis-server.ts';
import { FerryProcess, ROOT, workerEnv } from '../test/helpers/processes.ts';

/** Closes what a scenario started, last first, whatever failed before. */
export class Cleanup {
  readonly #steps: (() => Promise<void> | void)[] = [];

  defer(step: () => Promise<void> | void): void {
    this.#steps.push(step);
  }

  async run(): Promise<void> {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!;
      try {
        await step();
      } catch {
        // A cleanup step that fails must not keep the others from running.
      }
    }
  }
}

/** Runs `body` with a fresh Cleanup, always emptied afterwards. */
export async function withCleanup<T>(body: (cleanup: Cleanup) => Promise<T>): Promise<T> {
  const cleanup = new Cleanup();
  try {
    return await body(cleanup);
  } finally {
    await cleanup.run();
  }
}

/** A temp directory removed by the cleanup. */
export async function tempDir(cleanup: Cleanup, label: string): Promise<string> {
  const dir = join(tmpdir(), `ferry-chaos-${label}-${randomUUID().slice(0, 8)}`);
  await mkdir(dir, { recursive: true });
  cleanup.defer(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface ChaosRedis {
  url: string;
  /** Its `--dir`: the AOF directory (`appendonlydir/`) and redis.log. */
  dir: string;
  /** A plain client for reading keys. */
  client: Redis;
}

/** A private redis-server on a free port in a temp dir; `aof: true` is `appendonly yes` + `appendfsync always`. */
export async function startChaosRedis(cleanup: Cleanup, options: { aof: boolean }): Promise<ChaosRedis> {
  const dir = await tempDir(cleanup, 'redis');
  const server = await startPrivateRedis({ dir, appendfsync: options.aof ? 'always' : 'no' });
  cleanup.defer(() => server.stop());
  const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  cleanup.defer(() => client.disconnect());
  return { url: server.url, dir, client };
}

/** The scenarios run the built CLI; say how to build it rather than fail on a missing file later. */
export async function ensureBuilt(): Promise<void> {
  try {
    await access(join(ROOT, 'dist', 'cli', 'main.js'));
  } catch {
    throw new Error('dist/cli/main.js is missing: run `npm run build` first');
  }
}

export async function writeServicesFile(dir: string, doc: unknown): Promise<string> {
  const path = join(dir, `services-${randomUUID().slice(0, 8)}.yaml`);
  await writeFile(path, JSON.stringify(doc, null, 2));
  return path;
}

export interface ApiToken {
  name: string;
  token: string;
  scopes: string[];
  services?: string[];
  tenants?: string[];
}

export interface RunningApi {
  process: FerryProcess;
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
}

/** `ferry api` on 127.0.0.1 and a free port, once it says it listens; SIGKILLed by the cleanup if still up. */
export async function startApiProcess(
  cleanup: Cleanup,
  options: {
    redisUrl: string;
    servicesFile: string;
    prefix: string;
    tokens: readonly ApiToken[];
    env?: Record<string, string | undefined>;
  },
): Promise<RunningApi> {
  await ensureBuilt();
  const api = new FerryProcess(['api'], {
    env: {
      REDIS_URL: options.redisUrl,
      FERRY_SERVICES: options.servicesFile,
      FERRY_PREFIX: options.prefix,
      FERRY_API_TOKENS: JSON.stringify(options.tokens),
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      ...options.env,
    },
  });
  cleanup.defer(async () => {
    await api.kill9();
  });
  const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 30_000 });
  const match = /http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
  if (match === null) throw new Error(`no URL in "${line}"`);
  const port = Number(match[1]);
  return { process: api, url: `http://127.0.0.1:${port}`, port };
}

/** `ferry worker` with short lock and sweep timings, once its pool started. */
export async function startWorkerProcess(
  cleanup: Cleanup,
  options: {
    redisUrl: string;
    servicesFile: string;
    prefix: string;
    env?: Record<string, string | undefined>;
  },
): Promise<FerryProcess> {
  await ensureBuilt();
  const worker = new FerryProcess(['worker'], {
    env: workerEnv({
      redisUrl: options.redisUrl,
      servicesFile: options.servicesFile,
      prefix: options.prefix,
      ...(options.env === undefined ? {} : { extra: options.env }),
    }),
  });
  cleanup.defer(async () => {
    await worker.kill9();
  });
  await worker.waitUntilStarted(30_000);
  return worker;
}

/** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
export async function stopProcess(process: FerryProcess, graceMs = 10_000): Promise<void> {
  if (!process.running) return;
  process.terminate();
  try {
    await process.waitForExit(graceMs);
  } catch {
    await process.kill9();
  }
}

/** The process's peak resident set size (VmHWM, Linux), MiB; undefined once it has exited or off Linux. */
export async function peakRssMiB(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return match === null ? undefined : Math.round(Number(match[1]) / 1024);
  } catch {
    return undefined;
  }
}

export interface DownstreamRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface DownstreamAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface Downstream {
  url: string;
  requests: DownstreamRequest[];
}

/** An HTTP server on 127.0.0.1:0 that records every request and answers as `answer` says. */
export async function startDownstream(
  cleanup: Cleanup,
  answer: (request: DownstreamRequest) => DownstreamAnswer,
): Promise<Downstream> {
  const requests: DownstreamRequest[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const recorded: DownstreamRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(recorded);
      let step: DownstreamAnswer;
      try {
        step = answer(recorded);
      } catch (error) {
        step = { status: 500, body: `downstream script failed: ${(error as Error).message}` };
      }
      if (res.destroyed) return;
      res.writeHead(step.status, { 'content-type': 'application/json', ...step.headers });
      res.end(step.body ?? '');
    });
  });
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  cleanup.defer(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${address.port}`, requests };
}

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

/** Polls `check` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Runs `task` over `items` with at most `limit` at a time, in order of start. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (;;) {
      const index = next++;
      if (index >= items.length) return;
      results[index] = await task(items[index]!, index);
    }
  });
  await Promise.all(lanes);
  return results;
}

/** A small, fast, seedable PRNG (mulberry32): the same seed gives the same run. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** [0, 1) */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  /** `length` characters of [A-Za-z0-9]. */
  word(length: number): string {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    let out = '';
    for (let i = 0; i < length; i++) out += alphabet[Math.floor(this.next() * alphabet.length)];
    return out;
  }
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
