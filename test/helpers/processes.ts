/**
 * Child processes of the built CLI (`node dist/cli/main.js …`) for end-to-end tests: a clean environment,
 * captured stdout/stderr lines, waits on output and exit, SIGTERM and SIGKILL. Every spawned process is
 * killed when the test (or, outside a test, the file) finishes, and as a last resort when the runner exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { registerCleanup } from './cleanup.ts';

/** The repository root and the built CLI (vitest's globalSetup builds dist/ before any test file runs). */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'dist', 'cli', 'main.js');

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type LineMatch = string | RegExp | ((line: string) => boolean);

/** One pino JSON log line. */
export type LogEntry = Record<string, unknown> & { msg?: string; level?: number };

export interface SpawnOptions {
  /**
   * Environment on top of a clean copy of the runner's (no REDIS_*, FERRY_* or LOG_* leaks in) and
   * FERRY_METRICS_PORT=0 (no worker metrics server); `undefined` removes a key.
   */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to the child's stdin, which is then closed; without it stdin is not connected (`ignore`). */
  stdin?: string;
}

/** Whoever reads the runner's env: keys a child must never inherit by accident. */
const INHERITED_BLOCKLIST = /^(REDIS_|FERRY_|LOG_)/;

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort (a test that crashed before its cleanup ran): never leave a worker behind.
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

export class FerryProcess {
  readonly child: ChildProcess;
  readonly args: readonly string[];
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<Exit>;
  readonly #lines = new EventEmitter();
  #exit: Exit | undefined;

  constructor(args: readonly string[], options: SpawnOptions = {}) {
    this.args = args;
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env))
      if (!INHERITED_BLOCKLIST.test(key)) env[key] = value;
    // No metrics server unless the test asks for one: parallel workers would all want the default port 9464.
    env.FERRY_METRICS_PORT = '0';
    for (const [key, value] of Object.entries(options.env ?? {})) {
      if (value === undefined) delete env[key];
      else env[key] = value;
    }
    this.child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd ?? ROOT,
      env,
      stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (options.stdin !== undefined) {
      // A child that exits before reading all of it closes the pipe: not the test's failure.
      this.child.stdin!.on('error', () => undefined);
      this.child.stdin!.end(options.stdin);
    }
    live.add(this.child);
    installExitHook();
    this.#lines.setMaxListeners(0);
    const streamsClosed = [
      this.#capture(this.child.stdout!, this.stdout, 'stdout'),
      this.#capture(this.child.stderr!, this.stderr, 'stderr'),
    ];
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once('error', () => {
        // spawn itself failed (it cannot with process.execPath, but never hang on it).
        this.#exit = { code: null, signal: null };
        resolve(this.#exit);
      });
      this.child.once('exit', (code, signal) => {
        // Every output line read before anyone sees the exit.
        void Promise.all(streamsClosed).then(() => {
          live.delete(this.child);
          this.#exit = { code, signal };
          this.#lines.emit('exit');
          resolve(this.#exit);
        });
      });
    });
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  /** Every line so far, stdout then stderr, for failure messages. */
  output(): string {
    return [
      `$ ferry ${this.args.join(' ')}`,
      '--- stdout',
      ...this.stdout,
      '--- stderr',
      ...this.stderr,
    ].join('\n');
  }

  /** The JSON log lines on stdout (workers log JSON unless LOG_FORMAT=pretty). */
  logs(): LogEntry[] {
    const entries: LogEntry[] = [];
    for (const line of this.stdout) {
      if (!line.startsWith('{')) continue;
      try {
        entries.push(JSON.parse(line) as LogEntry);
      } catch {
        // A line that only looks like JSON: not a log entry.
      }
    }
    return entries;
  }

  /** Resolves with the first line (already seen or to come) that matches; rejects on timeout or exit. */
  waitForLine(
    match: LineMatch,
    options: { timeoutMs?: number; stream?: 'stdout' | 'stderr' | 'both' } = {},
  ): Promise<string> {
    const test = toPredicate(match);
    const stream = options.stream ?? 'both';
    const timeoutMs = options.timeoutMs ?? 15_000;
    const seen = [
      ...(stream === 'stderr' ? [] : this.stdout),
      ...(stream === 'stdout' ? [] : this.stderr),
    ].find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onLine = (line: string, from: 'stdout' | 'stderr'): void => {
        if ((stream === 'both' || stream === from) && test(line)) finish(() => resolve(line));
      };
      const onExit = (): void =>
        finish(() =>
          reject(
            new Error(
              `process exited (${JSON.stringify(this.#exit)}) before printing ${String(match)}\n${this.output()}`,
            ),
          ),
        );
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(new Error(`no line matching ${String(match)} within ${timeoutMs} ms\n${this.output()}`)),
          ),
        timeoutMs,
      );
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.#lines.off('line', onLine);
        this.#lines.off('exit', onExit);
        settle();
      };
      this.#lines.on('line', onLine);
      this.#lines.on('exit', onExit);
      if (!this.running) onExit();
    });
  }

  /** Resolves with the first JSON log entry that matches. */
  async waitForLog(match: (entry: LogEntry) => boolean, timeoutMs = 15_000): Promise<LogEntry> {
    const line = await this.waitForLine(
      (text) => {
        if (!text.startsWith('{')) return false;
        try {
          return match(JSON.parse(text) as LogEntry);
        } catch {
          return false;
        }
      },
      { timeoutMs, stream: 'stdout' },
    );
    return JSON.parse(line) as LogEntry;
  }

  /** How many JSON log entries so far match (poll it with `expect.poll`). */
  countLogs(match: (entry: LogEntry) => boolean): number {
    return this.logs().filter(match).length;
  }

  /** `worker pool started`: the worker takes jobs from now on. */
  waitUntilStarted(timeoutMs = 15_000): Promise<LogEntry> {
    return this.waitForLog((entry) => entry.msg === 'worker pool started', timeoutMs);
  }

  /** Sends SIGTERM (graceful shutdown); see waitForExit. */
  terminate(): void {
    if (this.running) this.child.kill('SIGTERM');
  }

  /** SIGKILL, as a crash or the OOM killer would; resolves once the process is gone. */
  async kill9(): Promise<Exit> {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** Resolves with the exit; rejects (leaving the process running for cleanup) after timeoutMs. */
  waitForExit(timeoutMs = 15_000): Promise<Exit> {
    return withTimeout(
      this.exited,
      timeoutMs,
      () => `process did not exit within ${timeoutMs} ms\n${this.output()}`,
    );
  }

  #capture(stream: NodeJS.ReadableStream, into: string[], name: 'stdout' | 'stderr'): Promise<void> {
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on('line', (line) => {
      into.push(line);
      this.#lines.emit('line', line, name);
    });
    return once(lines, 'close').then(() => undefined);
  }
}

/** Spawns `ferry <args>`; the process is SIGKILLed when the current test (or file) finishes, if still running. */
export function spawnFerry(args: readonly string[], options: SpawnOptions = {}): FerryProcess {
  const ferry = new FerryProcess(args, options);
  registerCleanup(async () => {
    await ferry.kill9();
  });
  return ferry;
}

export interface RunResult extends Exit {
  stdout: string;
  stderr: string;
  process: FerryProcess;
}

/** Runs a short command to its end: exit code and whole output. */
export async function runFerry(
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<RunResult> {
  const ferry = spawnFerry(args, options);
  const exit = await ferry.waitForExit(options.timeoutMs ?? 20_000);
  return { ...exit, stdout: ferry.stdout.join('\n'), stderr: ferry.stderr.join('\n'), process: ferry };
}

export interface WorkerEnvOptions {
  redisUrl: string;
  servicesFile: string;
  prefix: string;
  /** Anything else (FERRY_MAX_STALLED_COUNT, FERRY_SHUTDOWN_TIMEOUT_MS, …); overrides the defaults below. */
  extra?: Record<string, string | undefined>;
}

/**
 * Environment for a worker whose crashes resolve within seconds: a 2 s lock (a SIGKILLed worker's jobs are
 * taken again 2-3 s later), stall checks every 500 ms, failed-set sweeps every second, JSON logs.
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

/** A temp directory removed when the current test (or, outside a test, the file) finishes. */
export async function tempDir(label = 'ferry-test'): Promise<string> {
  const dir = join(tmpdir(), `${label}-${randomUUID().slice(0, 8)}`);
  await mkdir(dir, { recursive: true });
  registerCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes a services file (an object is written as JSON, which is YAML too) into a temp dir; returns its path. */
export async function writeServicesFile(doc: unknown, dir?: string): Promise<string> {
  const path = join(dir ?? (await tempDir('ferry-services')), `services-${randomUUID().slice(0, 8)}.yaml`);
  await writeFile(path, typeof doc === 'string' ? doc : JSON.stringify(doc, null, 2));
  return path;
}

function toPredicate(match: LineMatch): (line: string) => boolean {
  if (typeof match === 'string') return (line) => line.includes(match);
  if (match instanceof RegExp) return (line) => match.test(line);
  return match;
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** `promise`, or a rejection with `message()` after `timeoutMs`. */
export async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  message: () => string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message())), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `ferry worker` with `env`, once it says it started. */
export async function startWorker(env: Record<string, string | undefined>): Promise<FerryProcess> {
  const worker = spawnFerry(['worker'], { env });
  await worker.waitUntilStarted(30_000);
  return worker;
}
