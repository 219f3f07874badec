/**
 * `ferry api` and `ferry worker` spawned from the built CLI (dist/) with a clean environment, their output and
 * exits, and what they are started with: the services file, the worker's environment, a key prefix.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { type Lab, sleep, track } from './lab.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');

/** The token `startApi` accepts unless told otherwise (admin). Not a secret: a throwaway for private processes. */
export const CHAOS_TOKEN = 'chaos-admin-token-0123456789abcdef';

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

/** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
export async function stopProcess(child: FerryChild, graceMs = 10_000): Promise<void> {
  if (child.running) await child.timeTermination(graceMs);
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
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
}

export interface ApiToken {
  name: string;
  token: string;
  scopes: string[];
  services?: string[];
  tenants?: string[];
}

/** `ferry api` on 127.0.0.1 and a free port, once it is listening; by default one admin token, CHAOS_TOKEN. */
export async function startApi(
  lab: Lab,
  options: {
    redisUrl: string;
    servicesFile: string;
    prefix: string;
    tokens?: readonly ApiToken[];
    extra?: Record<string, string | undefined>;
  },
): Promise<RunningApi> {
  const tokens = options.tokens ?? [{ name: 'chaos', token: CHAOS_TOKEN, scopes: ['admin'] }];
  const api = spawnFerry(lab, ['api'], {
    REDIS_URL: options.redisUrl,
    FERRY_SERVICES: options.servicesFile,
    FERRY_PREFIX: options.prefix,
    FERRY_API_TOKENS: JSON.stringify(tokens),
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    ...options.extra,
  });
  const line = await api.waitForLine(/Ferry API listening on/, 30_000);
  const match = /http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
  if (match === null) throw new Error(`ferry api: no URL in ${line}`);
  const port = Number(match[1]);
  return { process: api, url: `http://127.0.0.1:${port}`, port };
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
