/**
 * Ferry's log destination on a real file: buffered lines reach it within the flush interval, on exit and on
 * an uncaught error; bufferBytes 0 writes each line without waiting.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { createLogDestination, createLogger, LOG_FLUSH_INTERVAL_MS } from '../../src/core/logger.ts';

const dir = await mkdtemp(join(tmpdir(), 'ferry-logger-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

const LOGGER_MODULE = fileURLToPath(new URL('../../src/core/logger.ts', import.meta.url));

async function lines(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line !== '');
}

async function waitForLines(file: string, count: number, withinMs: number): Promise<string[]> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const found = await lines(file);
    if (found.length >= count || Date.now() > deadline) return found;
    await sleep(10);
  }
}

/**
 * Runs a child that logs `count` lines through Ferry's default destination (stdout, buffered) and then ends as
 * `how`; resolves with its exit code and the JSON lines it printed.
 */
async function runChild(
  count: number,
  how: 'exit' | 'throw',
): Promise<{ code: number | null; lines: string[] }> {
  const script = `
    const { createLogger } = await import(${JSON.stringify(LOGGER_MODULE)});
    const logger = createLogger();
    for (let i = 0; i < ${count}; i++) logger.info({ i }, 'line');
    ${how === 'exit' ? 'process.exit(0);' : "setImmediate(() => { throw new Error('boom'); });"}
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { code, lines: out.split('\n').filter((line) => line.startsWith('{')) };
}

describe('createLogDestination', () => {
  it('buffers lines and writes them within the flush interval', async () => {
    const file = join(dir, 'buffered.log');
    const destination = createLogDestination({ dest: file });
    const logger = createLogger({ destination });
    logger.info({ n: 1 }, 'one');
    logger.info({ n: 2 }, 'two');
    const found = await waitForLines(file, 2, LOG_FLUSH_INTERVAL_MS * 20);
    expect(found.map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual(['one', 'two']);
    destination.flushSync();
  });

  it('with bufferBytes 0, writes a line without waiting for the interval', async () => {
    const file = join(dir, 'unbuffered.log');
    const destination = createLogDestination({ dest: file, bufferBytes: 0 });
    createLogger({ destination }).info('at once');
    expect(await waitForLines(file, 1, LOG_FLUSH_INTERVAL_MS / 2)).toHaveLength(1);
    destination.flushSync();
  });

  it.each(['exit', 'throw'] as const)(
    'loses no buffered stdout line when the process ends by %s',
    async (how) => {
      const { code, lines: found } = await runChild(25, how);
      expect(code).toBe(how === 'exit' ? 0 : 1);
      expect(found).toHaveLength(25);
      expect((JSON.parse(found[24]!) as { i: number }).i).toBe(24);
    },
    20_000,
  );
});
