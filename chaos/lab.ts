/**
 * What every chaos scenario stands on: a `Lab` that owns everything a run starts and stops it all, waits on
 * conditions, bounded parallel work and one seeded PRNG.
 *
 * Self-contained on purpose: test/helpers register their cleanup with vitest, and `npm run chaos` runs
 * outside vitest. Every process and server a scenario starts belongs to its `Lab`, which stops them all; a
 * process-exit hook SIGKILLs any child still alive, so none outlives the runner.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// ---------------------------------------------------------------------------------------------------------
// Ownership and cleanup

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Puts `child` under the exit hook and `killAllChildren` until it exits. */
export function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', killAllChildren);
}

/** SIGKILLs every child any lab started (the runner's Ctrl-C path, and the exit hook). */
export function killAllChildren(): void {
  for (const live of liveChildren) {
    // A SIGSTOPped child ignores SIGKILL until continued on some kernels' views of ps; continue it first.
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

/** Polls `check` until it returns a value other than undefined, or throws naming `what` after `timeoutMs`. */
export async function waitForValue<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  let value: T | undefined;
  const found = await waitFor(
    async () => {
      value = await check();
      return value !== undefined;
    },
    { timeoutMs, intervalMs },
  );
  if (!found) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
  return value!;
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

// ---------------------------------------------------------------------------------------------------------
// Seeded randomness

/** A small, fast, seedable PRNG (mulberry32): the same seed gives the same run plan. */
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
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
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
