/**
 * What a bench script starts (child processes, a private redis-server, a work directory) and its cleanup, also
 * on Ctrl-C and on an exit nobody planned: no child may outlive the script. Shared by throughput and enqueue.
 */
import type { ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';

import type { PrivateRedis } from '../src/cli/redis-server.ts';

export interface OwnedProcesses {
  /** Registers a child; it is killed at cleanup (SIGTERM, then SIGKILL after `graceMs`). */
  track(child: ChildProcess): ChildProcess;
  /** The private redis-server, stopped at cleanup. */
  redis: PrivateRedis | undefined;
  /** Removed at cleanup unless `keepWorkDir`. */
  workDir: string | undefined;
  keepWorkDir: boolean;
  cleanup(): Promise<void>;
}

export function ownProcesses(name: string, graceMs: number): OwnedProcesses {
  const children = new Set<ChildProcess>();
  let cleaning: Promise<void> | undefined;
  const owned: OwnedProcesses = {
    redis: undefined,
    workDir: undefined,
    keepWorkDir: false,
    track(child) {
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    cleanup() {
      cleaning ??= (async () => {
        for (const child of children) child.kill('SIGTERM');
        const deadline = Date.now() + graceMs;
        while (children.size > 0 && Date.now() < deadline)
          await new Promise((resolve) => setTimeout(resolve, 50));
        for (const child of children) child.kill('SIGKILL');
        await owned.redis?.stop();
        if (owned.workDir !== undefined && !owned.keepWorkDir) {
          await rm(owned.workDir, { recursive: true, force: true });
        }
      })();
      return cleaning;
    },
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${name}: ${signal}, stopping child processes and redis-server\n`);
      void owned.cleanup().finally(() => process.exit(130));
    });
  }
  // Last resort (an exit we did not plan): no child may outlive us.
  process.once('exit', () => {
    for (const child of children) child.kill('SIGKILL');
    owned.redis?.process.kill('SIGKILL');
  });
  return owned;
}

/** Runs a bench's main, then cleans up and exits with its code (1, with the stack, when it throws). */
export function runBench(name: string, owned: OwnedProcesses, main: () => Promise<number>): void {
  main()
    .then(async (code) => {
      await owned.cleanup();
      process.exit(code);
    })
    .catch(async (error: unknown) => {
      process.stderr.write(
        `${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      await owned.cleanup();
      process.exit(1);
    });
}

/** The port a child prints as its first stdout line (bench/downstream.ts does); rejects after 20 s or on exit. */
export function readPrintedPort(child: ChildProcess, what: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not print its port within 20 s`)), 20_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
      const line = /^(\d+)\n/.exec(out);
      if (line?.[1] !== undefined) {
        clearTimeout(timer);
        resolve(Number(line[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (code ${code}) before printing its port`));
    });
  });
}
