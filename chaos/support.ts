/**
 * What chaos scenarios share: a private redis-server that can be killed, paused and restarted on its port and
 * AOF; `ferry api` and `ferry worker` spawned from the built CLI (dist/); a counting downstream on 127.0.0.1
 * that records every call with its Idempotency-Key; waits on conditions; and the accounting of accepted jobs
 * (completed, dead-lettered, lost) and of downstream calls (duplicates, differing keys) that fills a row.
 *
 * Self-contained on purpose: test/helpers register their cleanup with vitest, and `npm run chaos` runs
 * outside vitest. Every process and server a scenario starts belongs to its `Lab`, which stops them all; a
 * process-exit hook SIGKILLs any child still alive, so none outlives the runner.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';

import { freePort } from '../src/cli/redis-server.ts';
import {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  type DeadLetterRecord,
  type JobData,
  type JobResult,
  serviceQueueName,
} from '../src/index.ts';
import type { ScenarioRow } from './scenario.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');

/** The one token every chaos API accepts (admin). Not a secret: a throwaway value for private processes. */
export const CHAOS_TOKEN = 'chaos-admin-token-0123456789abcdef';

// ---------------------------------------------------------------------------------------------------------
// Ownership and cleanup

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const live of liveChildren) {
      // A SIGSTOPped child ignores SIGKILL until continued on some kernels' views of ps; continue it first.
      live.kill('SIGCONT');
      live.kill('SIGKILL');
    }
  });
}

/** SIGKILLs every child any lab started (the runner's Ctrl-C path). */
export function killAllChildren(): void {
  for (const live of liveChildren) {
    live.kill('SIGCONT');
    live.kill('SIGKILL');
  }
}

/** Everything one scenario run starts; `cleanup()` stops it all, newest first, and never throws. */
export class Lab {
  readonly name: string;
  readonly log: (line: string) => void;
  readonly #cleanups: (() => Promise<void> | void)[] = [];

  constructor(name: string, log: (line: string) => void) {
    this.name = name;
    this.log = log;
  }

  defer(cleanup: () => Promise<void> | void): void {
    this.#cleanups.push(cleanup);
  }

  async tempDir(label = 'dir'): Promise<string> {
    const dir = join(tmpdir(), `ferry-chaos-${this.name}-${label}-${randomUUID().slice(0, 8)}`);
    await mkdir(dir, { recursive: true });
    this.defer(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  async cleanup(): Promise<void> {
    while (this.#cleanups.length > 0) {
      const cleanup = this.#cleanups.pop()!;
      try {
        await cleanup();
      } catch (error) {
        this.log(`cleanup: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }
}

/** Runs `body` with a fresh lab and always cleans it up. */
export async function withLab<T>(
  name: string,
  log: (line: string) => void,
  body: (lab: Lab) => Promise<T>,
): Promise<T> {
  const lab = new Lab(name, log);
  try {
    return await body(lab);
  } finally {
    await lab.cleanup();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Waiting

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `condition` until it holds; true when it did, false after `timeoutMs` (a scenario measures, so a
 * condition that never holds is a figure for the row, not an exception).
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: { timeoutMs: number; intervalMs?: number },
): Promise<boolean> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(options.intervalMs ?? 100);
  }
}

/** `waitFor`, but a timeout is an error naming `what`. */
export async function waitForOrThrow(
  what: string,
  condition: () => boolean | Promise<boolean>,
  options: { timeoutMs: number; intervalMs?: number },
): Promise<void> {
  if (!(await waitFor(condition, options)))
    throw new Error(`timed out after ${options.timeoutMs} ms: ${what}`);
}

// ---------------------------------------------------------------------------------------------------------
// Seeded randomness

/** mulberry32: small, fast, good enough to pick kill times; the same seed gives the same run plan. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

// ---------------------------------------------------------------------------------------------------------
// Redis

export interface ChaosRedisOptions {
  /** `always` for the durability scenarios; `no` (AOF off) for scenarios that never restart Redis. */
  appendfsync?: 'always' | 'everysec' | 'no';
  /** Extra redis-server flags, e.g. `['--maxmemory', '120mb']`. */
  flags?: readonly string[];
}

export interface ChaosRedis {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** The current server process (a restart replaces it). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** SIGKILL, as a crash would; resolves once it is gone. */
  kill9(): Promise<void>;
  /** SIGSTOP / SIGCONT: a hung Redis that keeps its connections open. */
  pause(): void;
  resume(): void;
  /** Starts the server again on the same port and directory (it loads its AOF) and waits until it answers. */
  restart(): Promise<void>;
  /** SIGTERM (continued first if paused); resolves once it is gone. */
  stop(): Promise<void>;
}

/** Starts a private redis-server on a free 127.0.0.1 port in a temp dir of the lab, stopped at cleanup. */
export async function startRedisServer(lab: Lab, options: ChaosRedisOptions = {}): Promise<ChaosRedis> {
  const dir = await lab.tempDir('redis');
  const port = await freePort();
  const fsync = options.appendfsync ?? 'no';
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    fsync === 'no' ? 'no' : 'yes',
    '--appendfsync',
    fsync === 'no' ? 'everysec' : fsync,
    '--maxmemory-policy',
    'noeviction',
    '--logfile',
    join(dir, 'redis.log'),
    ...(options.flags ?? []),
  ];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const launch = async (): Promise<void> => {
    const started = spawn(process.env.FERRY_REDIS_SERVER ?? 'redis-server', args, { stdio: 'ignore' });
    track(started);
    child = started;
    exited = new Promise<void>((resolve) => {
      if (started.exitCode !== null || started.signalCode !== null) resolve();
      else started.once('exit', () => resolve());
    });
    let failed: Error | undefined;
    started.once('error', (error) => {
      failed = error;
    });
    const ready = await waitFor(
      async () => failed !== undefined || started.exitCode !== null || (await redisAnswers(port)),
      { timeoutMs: 15_000, intervalMs: 25 },
    );
    if (failed !== undefined) throw failed;
    if (!ready || started.exitCode !== null) {
      started.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not start (see ${join(dir, 'redis.log')})`);
    }
  };
  const isRunning = (): boolean =>
    child !== undefined && child.exitCode === null && child.signalCode === null;
  const server: ChaosRedis = {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get pid() {
      return child?.pid;
    },
    get running() {
      return isRunning();
    },
    async kill9() {
      if (!isRunning()) return;
      child!.kill('SIGKILL');
      await exited;
    },
    pause() {
      if (isRunning()) child!.kill('SIGSTOP');
    },
    resume() {
      if (isRunning()) child!.kill('SIGCONT');
    },
    async restart() {
      if (isRunning()) throw new Error('redis-server is still running');
      await launch();
    },
    async stop() {
      if (!isRunning()) return;
      child!.kill('SIGCONT');
      child!.kill('SIGTERM');
      const timer = setTimeout(() => child?.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
  await launch();
  lab.defer(() => server.stop());
  return server;
}

/** One PING over a raw socket: true on +PONG within 500 ms. */
function redisAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
  });
}

/** A plain client for reading state (fails fast while Redis is down). Closed at cleanup. */
export function redisClient(lab: Lab, url: string): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 1, commandTimeout: 5_000 });
  client.on('error', () => undefined);
  lab.defer(() => client.disconnect());
  return client;
}

// ---------------------------------------------------------------------------------------------------------
// Ferry processes

/** One pino JSON log line. */
export type LogEntry = Record<string, unknown> & { msg?: string; level?: number };

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Keys a child must never inherit from the runner's environment. */
const INHERITED_BLOCKLIST = /^(REDIS_|FERRY_|LOG_)/;

/** `node dist/cli/main.js <args>` with a clean env, its output lines, its exit, its memory. */
export class FerryChild {
  readonly args: readonly string[];
  readonly child: ChildProcess;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<Exit>;
  readonly #lines = new EventEmitter();
  #exit: Exit | undefined;
  #peakRssBytes = 0;

  constructor(args: readonly string[], env: Record<string, string | undefined>) {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
    this.args = args;
    const childEnv: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env))
      if (!INHERITED_BLOCKLIST.test(key)) childEnv[key] = value;
    childEnv.FERRY_METRICS_PORT = '0';
    for (const [key, value] of Object.entries(env)) {
      if (value === undefined) delete childEnv[key];
      else childEnv[key] = value;
    }
    this.child = spawn(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(this.child);
    this.#lines.setMaxListeners(0);
    const closed = [
      this.#capture(this.child.stdout!, this.stdout),
      this.#capture(this.child.stderr!, this.stderr),
    ];
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once('error', () => {
        this.#exit = { code: null, signal: null };
        resolve(this.#exit);
      });
      this.child.once('exit', (code, signal) => {
        void Promise.all(closed).then(() => {
          this.#exit = { code, signal };
          this.#lines.emit('exit');
          resolve(this.#exit);
        });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  get exit(): Exit | undefined {
    return this.#exit;
  }

  /** The JSON log entries so far. */
  logs(): LogEntry[] {
    const entries: LogEntry[] = [];
    for (const line of this.stdout) {
      if (!line.startsWith('{')) continue;
      try {
        entries.push(JSON.parse(line) as LogEntry);
      } catch {
        // Only looks like JSON.
      }
    }
    return entries;
  }

  countLogs(match: (entry: LogEntry) => boolean): number {
    return this.logs().filter(match).length;
  }

  /** The last lines of output, for a note or an error. */
  tail(lines = 15): string {
    return [...this.stdout, ...this.stderr].slice(-lines).join('\n');
  }

  /** Resolves with the first line (seen or to come) matching; rejects on exit or timeout. */
  waitForLine(match: RegExp | ((line: string) => boolean), timeoutMs = 30_000): Promise<string> {
    const test = match instanceof RegExp ? (line: string) => match.test(line) : match;
    const seen = [...this.stdout, ...this.stderr].find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.#lines.off('line', onLine);
        this.#lines.off('exit', onExit);
        settle();
      };
      const onLine = (line: string): void => {
        if (test(line)) finish(() => resolve(line));
      };
      const onExit = (): void =>
        finish(() =>
          reject(
            new Error(`ferry ${this.args.join(' ')} exited (${JSON.stringify(this.#exit)}):\n${this.tail()}`),
          ),
        );
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(new Error(`ferry ${this.args.join(' ')}: no ${String(match)} in ${timeoutMs} ms`)),
          ),
        timeoutMs,
      );
      this.#lines.on('line', onLine);
      this.#lines.on('exit', onExit);
      if (!this.running) onExit();
    });
  }

  /**
   * Peak resident memory so far (Linux VmHWM: the kernel's high-water mark, so no sample can miss a spike).
   * Read it while the process is alive; the last value read is kept.
   */
  async peakRssBytes(): Promise<number> {
    if (this.running && this.pid !== undefined) {
      try {
        const status = await readFile(`/proc/${this.pid}/status`, 'utf8');
        const kb = /VmHWM:\s+(\d+)\s+kB/.exec(status)?.[1];
        if (kb !== undefined) this.#peakRssBytes = Math.max(this.#peakRssBytes, Number(kb) * 1024);
      } catch {
        // Gone meanwhile, or not Linux: keep the last value.
      }
    }
    return this.#peakRssBytes;
  }

  terminate(): void {
    if (this.running) this.child.kill('SIGTERM');
  }

  async kill9(): Promise<Exit> {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }

  /**
   * SIGTERM, then waits up to `limitMs` for the exit: `{ ms, exit }`, or `{ ms: undefined }` when it did not
   * exit in time (it is then SIGKILLed).
   */
  async timeTermination(limitMs: number): Promise<{ ms: number | undefined; exit: Exit | undefined }> {
    const signalledAt = performance.now();
    this.terminate();
    const exited = await Promise.race([this.exited.then(() => true), sleep(limitMs).then(() => false)]);
    if (!exited) {
      await this.kill9();
      return { ms: undefined, exit: undefined };
    }
    return { ms: Math.round(performance.now() - signalledAt), exit: this.#exit };
  }

  #capture(stream: NodeJS.ReadableStream, into: string[]): Promise<void> {
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on('line', (line) => {
      // A chatty child must not grow the runner without bound.
      if (into.length < 200_000) into.push(line);
      this.#lines.emit('line', line);
    });
    return once(lines, 'close').then(() => undefined);
  }
}

/** Spawns `ferry <args>`, SIGKILLed (if still running) at the lab's cleanup. */
export function spawnFerry(
  lab: Lab,
  args: readonly string[],
  env: Record<string, string | undefined>,
): FerryChild {
  const child = new FerryChild(args, env);
  lab.defer(async () => {
    child.child.kill('SIGCONT');
    await child.kill9();
  });
  return child;
}

export interface WorkerEnvOptions {
  redisUrl: string;
  servicesFile: string;
  prefix: string;
  extra?: Record<string, string | undefined>;
}

/**
 * A worker whose crashes resolve within seconds: a 2 s job lock (a SIGKILLed worker's jobs are taken again 2-3 s
 * later), stall checks every 500 ms, failed-set sweeps every second, JSON logs.
 */
export function workerEnv(options: WorkerEnvOptions): Record<string, string | undefined> {
  return {
    REDIS_URL: options.redisUrl,
    FERRY_SERVICES: options.servicesFile,
    FERRY_PREFIX: options.prefix,
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    FERRY_LOCK_DURATION_MS: '2000',
    FERRY_STALLED_INTERVAL_MS: '500',
    FERRY_SWEEP_INTERVAL_MS: '1000',
    FERRY_SHUTDOWN_TIMEOUT_MS: '10000',
    ...options.extra,
  };
}

/** `ferry worker`, once it logged `worker pool started`. */
export async function startWorker(lab: Lab, env: Record<string, string | undefined>): Promise<FerryChild> {
  const worker = spawnFerry(lab, ['worker'], env);
  await worker.waitForLine((line) => line.includes('"worker pool started"'), 30_000);
  return worker;
}

export interface RunningApi {
  process: FerryChild;
  url: string;
}

/** `ferry api` on a free port with the chaos admin token, once it is listening. */
export async function startApi(
  lab: Lab,
  options: {
    redisUrl: string;
    servicesFile: string;
    prefix: string;
    extra?: Record<string, string | undefined>;
  },
): Promise<RunningApi> {
  const api = spawnFerry(lab, ['api'], {
    REDIS_URL: options.redisUrl,
    FERRY_SERVICES: options.servicesFile,
    FERRY_PREFIX: options.prefix,
    FERRY_API_TOKENS: JSON.stringify([{ name: 'chaos', token: CHAOS_TOKEN, scopes: ['admin'] }]),
    PORT: '0',
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    ...options.extra,
  });
  const line = await api.waitForLine(/Ferry API listening on/, 30_000);
  const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)?.[1];
  if (url === undefined) throw new Error(`ferry api: no URL in ${line}`);
  return { process: api, url };
}

/** Writes a services file (JSON is YAML) into a temp dir of the lab; returns its path. */
export async function writeServicesFile(lab: Lab, doc: unknown): Promise<string> {
  const path = join(await lab.tempDir('services'), 'ferry.services.yaml');
  await writeFile(path, JSON.stringify(doc, null, 2));
  return path;
}

/** A Redis key prefix for one run. */
export function uniquePrefix(): string {
  return `chaos${randomUUID().slice(0, 8)}`;
}

/**
 * The operation every chaos service calls: the job id in the path, so each call can be tied to its job
 * whatever Idempotency-Key it carries (a differing key is then visible).
 */
export const CALL_OPERATION = { method: 'POST', path: '/jobs/{{ job.id }}', body: '{{ input }}' } as const;

// ---------------------------------------------------------------------------------------------------------
// Downstream

export interface RecordedCall {
  /** The job id from the path (`/jobs/<id>`), or the whole path when it has another shape. */
  jobId: string;
  path: string;
  /** The Idempotency-Key header as sent; `undefined` when none. */
  key: string | undefined;
  at: number;
}

/** Answers one call; `index` counts every call so far (0-based), `nth` the calls for this job (1-based). */
export type DownstreamHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  call: RecordedCall & { index: number; nth: number },
) => void;

export interface CountingDownstream {
  readonly url: string;
  readonly calls: RecordedCall[];
  handle(handler: DownstreamHandler): void;
  close(): Promise<void>;
}

/** `200 {"ok":true}` after `delayMs`. */
export function answerOk(delayMs = 0): DownstreamHandler {
  return (_req, res) => {
    const send = (): void => {
      if (res.destroyed) return;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    };
    if (delayMs > 0) setTimeout(send, delayMs);
    else send();
  };
}

/**
 * A downstream on 127.0.0.1:0 that records every call (job id from the path, Idempotency-Key, time) before
 * the handler answers it. The request body is read and dropped, never kept.
 */
export async function startDownstream(
  lab: Lab,
  initial: DownstreamHandler = answerOk(),
): Promise<CountingDownstream> {
  let handler = initial;
  const calls: RecordedCall[] = [];
  const perJob = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    req.resume();
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
    handler(req, res, { ...call, index, nth });
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

// ---------------------------------------------------------------------------------------------------------
// Enqueueing over the API

export interface AcceptedJob {
  service: string;
  id: string;
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

// ---------------------------------------------------------------------------------------------------------
// Job outcomes

export type Outcome =
  | { state: 'completed'; finishedOn: number | undefined }
  | { state: 'dead-lettered'; type: string | undefined; finishedOn: number | undefined }
  | { state: 'pending'; detail: string };

export interface Accounting {
  enqueued: number;
  completed: number;
  deadLettered: number;
  lost: number;
  /** Dead letters by final error type. */
  deadLetterTypes: Record<string, number>;
  /** Each job's outcome, by `<service>/<id>`. */
  outcomes: Map<string, Outcome>;
  /** The first few lost jobs and the state they were left in. */
  lostSamples: string[];
}

/** Reads jobs and dead letters the way any BullMQ tool would. */
export class JobInspector {
  readonly #client: Redis;
  readonly #prefix: string;
  readonly #queues = new Map<string, Queue<JobData, JobResult>>();
  readonly #deadLetters: Queue<DeadLetterRecord>;

  constructor(lab: Lab, redisUrl: string, prefix: string) {
    this.#client = redisClient(lab, redisUrl);
    this.#prefix = prefix;
    this.#deadLetters = new Queue(DEAD_LETTER_QUEUE, { connection: this.#client, prefix });
    lab.defer(() => this.close());
  }

  async close(): Promise<void> {
    for (const queue of this.#queues.values()) await queue.close().catch(() => undefined);
    await this.#deadLetters.close().catch(() => undefined);
  }

  queue(service: string): Queue<JobData, JobResult> {
    let queue = this.#queues.get(service);
    if (queue === undefined) {
      queue = new Queue(serviceQueueName(service), { connection: this.#client, prefix: this.#prefix });
      this.#queues.set(service, queue);
    }
    return queue;
  }

  async outcome(job: AcceptedJob): Promise<Outcome> {
    const found = await Job.fromId<JobData, JobResult>(this.queue(job.service), job.id);
    if (found === undefined) return { state: 'pending', detail: 'missing' };
    const state = await found.getState();
    if (state === 'completed') return { state: 'completed', finishedOn: found.finishedOn };
    if (state === 'failed') {
      const dead = await Job.fromId<DeadLetterRecord>(
        this.#deadLetters,
        deadLetterJobId(job.service, job.id, found.timestamp),
      );
      if (dead !== undefined)
        return { state: 'dead-lettered', type: dead.data.finalError?.type, finishedOn: found.finishedOn };
      return { state: 'pending', detail: 'failed without a dead letter' };
    }
    return { state: 'pending', detail: state };
  }

  /**
   * Waits until every job has ended (completed, or failed with its dead letter) or `timeoutMs` passed;
   * whatever has not ended then is lost.
   */
  async settle(jobs: readonly AcceptedJob[], timeoutMs: number): Promise<Accounting> {
    const outcomes = new Map<string, Outcome>();
    const keyOf = (job: AcceptedJob): string => `${job.service}/${job.id}`;
    const unique = [...new Map(jobs.map((job) => [keyOf(job), job])).values()];
    await waitFor(
      async () => {
        const open = unique.filter(
          (job) =>
            outcomes.get(keyOf(job))?.state !== 'completed' &&
            outcomes.get(keyOf(job))?.state !== 'dead-lettered',
        );
        for (let i = 0; i < open.length; i += 200) {
          const batch = open.slice(i, i + 200);
          const read = await Promise.all(
            batch.map((job) =>
              this.outcome(job).catch((error: unknown): Outcome => ({
                state: 'pending',
                detail: `unreadable: ${String(error)}`,
              })),
            ),
          );
          batch.forEach((job, j) => outcomes.set(keyOf(job), read[j]!));
        }
        return unique.every((job) => outcomes.get(keyOf(job))?.state !== 'pending');
      },
      { timeoutMs, intervalMs: 250 },
    );
    const accounting: Accounting = {
      enqueued: unique.length,
      completed: 0,
      deadLettered: 0,
      lost: 0,
      deadLetterTypes: {},
      outcomes,
      lostSamples: [],
    };
    for (const job of unique) {
      const outcome = outcomes.get(keyOf(job)) ?? { state: 'pending', detail: 'never read' };
      if (outcome.state === 'completed') accounting.completed++;
      else if (outcome.state === 'dead-lettered') {
        accounting.deadLettered++;
        const type = outcome.type ?? 'unknown';
        accounting.deadLetterTypes[type] = (accounting.deadLetterTypes[type] ?? 0) + 1;
      } else {
        accounting.lost++;
        if (accounting.lostSamples.length < 3)
          accounting.lostSamples.push(`${keyOf(job)}: ${outcome.detail}`);
      }
    }
    return accounting;
  }
}

/** ms from `faultEndedAt` (epoch ms) to the first job that ended completed after it; null when none did. */
export function recoverMs(accounting: Accounting, faultEndedAt: number): number | null {
  let first: number | undefined;
  for (const outcome of accounting.outcomes.values()) {
    if (outcome.state !== 'completed' || outcome.finishedOn === undefined) continue;
    if (outcome.finishedOn >= faultEndedAt && (first === undefined || outcome.finishedOn < first))
      first = outcome.finishedOn;
  }
  return first === undefined ? null : first - faultEndedAt;
}

// ---------------------------------------------------------------------------------------------------------
// Rows

export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '-';
  return ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`;
}

export function formatMiB(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KiB`;
  return `${Math.round(bytes / 1024 / 1024)} MiB`;
}

/** A row for a scenario that failed to run at all (set-up threw): everything it could not check is not ok. */
export function crashedRow(scenario: string, error: unknown): ScenarioRow {
  const message = error instanceof Error ? error.message : String(error);
  return {
    scenario,
    enqueued: 0,
    completed: 0,
    deadLettered: 0,
    lost: 0,
    duplicateCalls: 0,
    duplicatesWithDifferingKeys: 0,
    serverErrors: 0,
    secretHits: 0,
    recoverMs: null,
    notes: `scenario crashed: ${message.split('\n')[0]!.slice(0, 200)}`,
    ok: false,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Services

/** The service every chaos scenario calls. */
export const SERVICE = 'chaos';

/**
 * A services file with one service, `chaos`, whose `call` operation puts the job id in the path. The breaker
 * never opens unless a scenario asks (an open breaker would hold the queue and hide what is measured).
 */
export function servicesDoc(
  baseUrl: string,
  service: Record<string, unknown> = {},
  operations: Record<string, unknown> = {},
): unknown {
  return {
    services: {
      [SERVICE]: {
        baseUrl,
        timeoutMs: 10_000,
        concurrency: 4,
        retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 } },
        breaker: { errorThresholdPercentage: 100, volumeThreshold: 1_000_000 },
        ...service,
        operations: { call: CALL_OPERATION, ...operations },
      },
    },
  };
}
