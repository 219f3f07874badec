/**
 * `ferry <args>` run in-process: the real program (src/cli/program.ts) with captured stdout/stderr, an exit
 * that only records, and the environment a child process would get (processes.ts: no REDIS_*, FERRY_* or LOG_*
 * of the runner's, FERRY_METRICS_PORT=0, then `env`). For arguments, output and exit codes; what needs a real
 * process (the bin, signals, a terminal, process exit) stays with runFerry/spawnFerry. The result reads like
 * runFerry's: stdout and stderr as their lines joined, without the last newline.
 *
 * process.env is swapped for the run, so runs in one file must not overlap (vitest gives each file its own
 * process): a second run while one is in progress throws.
 */
import { Readable, Writable } from 'node:stream';

import type { CliIo } from '../../src/cli/io.ts';
import { runCli } from '../../src/cli/program.ts';
import type { RunResult } from './processes.ts';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** `$ ferry …` with stdout then stderr, for failure messages. */
  output(): string;
}

export interface CliRunOptions {
  /** Environment on top of the clean one; `undefined` removes a key. */
  env?: Record<string, string | undefined>;
  /** What stdin holds (then it ends); without it stdin is empty, as a child's `ignore`d stdin reads. */
  stdin?: string;
}

/** Keys a run never inherits from the runner (as processes.ts's children). */
const INHERITED_BLOCKLIST = /^(REDIS_|FERRY_|LOG_)/;

class Captured extends Writable {
  readonly isTTY = false;
  #text = '';

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: () => void): void {
    this.#text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    done();
  }

  /** As the lines a child's output is read into, joined: CR/LF ends a line, the last newline is dropped. */
  lines(): string {
    const lines = this.#text.split(/\r\n|\n|\r/);
    if (lines.at(-1) === '') lines.pop();
    return lines.join('\n');
  }
}

/** A child process's run (runFerry) read as an in-process one, for tests that mix both. */
export function fromChild(run: RunResult): CliRun {
  return {
    code: run.code ?? -1,
    stdout: run.stdout,
    stderr: run.stderr,
    output: () => run.process.output(),
  };
}

let running = false;

export async function runCliInProcess(args: readonly string[], options: CliRunOptions = {}): Promise<CliRun> {
  if (running) throw new Error('runCliInProcess: runs in one file must not overlap (process.env is swapped)');
  running = true;
  const saved = { ...process.env };
  for (const key of Object.keys(process.env)) if (INHERITED_BLOCKLIST.test(key)) delete process.env[key];
  process.env.FERRY_METRICS_PORT = '0';
  for (const [key, value] of Object.entries(options.env ?? {})) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  const stdout = new Captured();
  const stderr = new Captured();
  const io: CliIo = {
    stdin: Readable.from(options.stdin === undefined ? [] : [options.stdin]),
    stdout,
    stderr,
    exitCode: undefined,
    exit: () => undefined,
  };
  try {
    const code = await runCli(args, io);
    const result = { code, stdout: stdout.lines(), stderr: stderr.lines() };
    return {
      ...result,
      output: () =>
        [
          `$ ferry ${args.join(' ')} (in-process)`,
          '--- stdout',
          result.stdout,
          '--- stderr',
          result.stderr,
        ].join('\n'),
    };
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
    running = false;
  }
}
