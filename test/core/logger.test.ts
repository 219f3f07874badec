/**
 * Ferry's log destination on a real file: buffered lines reach it within the flush interval, on exit and on
 * an uncaught error; bufferBytes 0 writes each line without waiting.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { readEnv } from '../../src/core/env.ts';
import {
  createLogDestination,
  createLogger,
  type LogDestination,
  type LogDestinationOptions,
  type Logger,
  MAX_LOG_BUFFER_BYTES,
} from '../../src/core/logger.ts';

const dir = await mkdtemp(join(tmpdir(), 'ferry-logger-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

const LOGGER_MODULE = fileURLToPath(new URL('../../src/core/logger.ts', import.meta.url));

async function lines(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line !== '');
}

/** A destination on a fresh file in the test's dir, open, and a logger on it. */
async function openLog(
  name: string,
  options: Omit<LogDestinationOptions, 'dest'>,
): Promise<{ file: string; destination: LogDestination; logger: Logger }> {
  const file = join(dir, name);
  const destination = createLogDestination({ ...options, dest: file });
  await once(destination, 'ready');
  return { file, destination, logger: createLogger({ destination }) };
}

/**
 * Resolves once a fresh destination flushing every `intervalMs` has written `count` batches, each logged after
 * the previous one landed: at least `count` flush intervals, and the file writes they start, have passed. What
 * a test that expects nothing to happen waits for, instead of a fixed sleep.
 */
async function pastFlushes(intervalMs: number, count: number): Promise<void> {
  const { destination, logger } = await openLog(`clock-${randomUUID()}.log`, { flushIntervalMs: intervalMs });
  for (let i = 0; i < count; i++) {
    const written = once(destination, 'write');
    logger.info({ i }, 'tick');
    await written;
  }
  const closed = once(destination, 'close');
  destination.end();
  await closed;
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

/**
 * Like runChild, but stdout is a pipe nobody reads for half a second, filled almost to the brim before the
 * lines are logged (as with a slow log collector): a batch handed to an asynchronous write then is still in
 * flight when the process ends, unless the exit path writes it synchronously. `flush` ends the way Ferry's
 * shutdown does (logger.flush, then exit).
 */
async function runChildBehindSlowPipe(
  how: 'exit' | 'throw' | 'flush',
): Promise<{ code: number | null; lines: string[] }> {
  const end = {
    exit: 'process.exit(0);',
    throw: "throw new Error('boom');",
    flush: 'setTimeout(() => process.exit(0), 5000).unref(); logger.flush(() => process.exit(0));',
  }[how];
  const script = `
    const { writeSync } = await import('node:fs');
    const { createLogger } = await import(${JSON.stringify(LOGGER_MODULE)});
    const logger = createLogger();
    writeSync(1, 'f'.repeat(65000) + '\\n');
    setTimeout(() => {
      for (let i = 0; i < 10; i++) logger.info({ i, pad: 'p'.repeat(150) }, 'line');
      logger.info('last');
      ${end}
    }, 100);
  `;
  const node = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', script]
    .map((arg) => `'${arg.replaceAll("'", `'\\''`)}'`)
    .join(' ');
  const child = spawn('sh', ['-c', `${node} 2>/dev/null | (sleep 0.5; cat)`], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { code, lines: out.split('\n').filter((line) => line.startsWith('{')) };
}

describe('createLogDestination', () => {
  it('keeps lines in the buffer until a flush, and writes them together', async () => {
    const { file, destination, logger } = await openLog('buffered.log', { flushIntervalMs: 60_000 });
    logger.info({ n: 1 }, 'one');
    logger.info({ n: 2 }, 'two');
    await pastFlushes(10, 3);
    expect(await lines(file)).toEqual([]);
    const written = once(destination, 'write');
    destination.flush();
    await written;
    const found = await lines(file);
    expect(found.map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual(['one', 'two']);
    destination.end();
  });

  it('writes buffered lines on its own after the flush interval', async () => {
    const { file, destination, logger } = await openLog('periodic.log', { flushIntervalMs: 20 });
    logger.info('later');
    await expect.poll(async () => (await lines(file)).length, { timeout: 10_000 }).toBe(1);
    destination.end();
  });

  it('with bufferBytes 0, writes each line without a flush', async () => {
    const { file, destination, logger } = await openLog('unbuffered.log', {
      bufferBytes: 0,
      flushIntervalMs: 60_000,
    });
    const written = once(destination, 'write');
    logger.info('at once');
    await written;
    expect(await lines(file)).toHaveLength(1);
    destination.end();
  });

  it('writes a batch as soon as the buffer fills, without waiting for the interval, in order', async () => {
    const { file, destination, logger } = await openLog('full.log', {
      bufferBytes: 500,
      flushIntervalMs: 60_000,
    });
    const numbers = async (): Promise<number[]> =>
      (await lines(file)).map((line) => (JSON.parse(line) as { i: number }).i);
    // Each line is about 100 characters: the buffer fills at the fifth or sixth, the rest waits.
    for (let i = 0; i < 10; i++) logger.info({ i }, 'a line long enough to count');
    await expect.poll(async () => (await numbers()).length, { timeout: 10_000 }).toBeGreaterThan(0);
    const first = await numbers();
    expect(first.length).toBeLessThan(10);
    expect(first).toEqual([...first.keys()]);
    destination.flush();
    await expect.poll(numbers, { timeout: 10_000 }).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    destination.end();
  });

  it('writes nothing while there is nothing to write', async () => {
    const { destination, logger } = await openLog('idle.log', { flushIntervalMs: 10 });
    let writes = 0;
    destination.on('write', () => writes++);
    logger.info('one');
    await expect.poll(() => writes, { timeout: 10_000 }).toBe(1);
    await pastFlushes(10, 10);
    expect(writes).toBe(1);
    destination.end();
  });

  it('drops a line logged after end instead of throwing from its timer', async () => {
    const { file, destination, logger } = await openLog('ended.log', { flushIntervalMs: 10 });
    logger.info('before');
    destination.end();
    logger.info('after');
    await once(destination, 'close');
    await pastFlushes(10, 5);
    expect((await lines(file)).map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual(['before']);
  });

  it('accepts the largest buffer FERRY_LOG_BUFFER_BYTES allows', () => {
    expect(readEnv({ FERRY_LOG_BUFFER_BYTES: String(MAX_LOG_BUFFER_BYTES) }).FERRY_LOG_BUFFER_BYTES).toBe(
      MAX_LOG_BUFFER_BYTES,
    );
    const destination = createLogDestination({
      dest: join(dir, 'max.log'),
      bufferBytes: MAX_LOG_BUFFER_BYTES,
    });
    destination.end();
    expect(() => readEnv({ FERRY_LOG_BUFFER_BYTES: String(MAX_LOG_BUFFER_BYTES + 1) })).toThrow(
      'FERRY_LOG_BUFFER_BYTES',
    );
  });

  it.each(['exit', 'throw', 'flush'] as const)(
    'loses no line behind a backed-up stdout when the process ends by %s',
    async (how) => {
      const { lines: found } = await runChildBehindSlowPipe(how);
      expect(found.map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual([
        ...Array<string>(10).fill('line'),
        'last',
      ]);
    },
    20_000,
  );

  it('calls a flush back only once the lines are written', async () => {
    const { file, destination, logger } = await openLog('flushed.log', { flushIntervalMs: 60_000 });
    const events: string[] = [];
    destination.on('write', () => events.push('write'));
    for (let i = 0; i < 3; i++) logger.info({ i }, 'line');
    await new Promise<void>((resolve) =>
      logger.flush(() => {
        events.push('flushed');
        resolve();
      }),
    );
    expect(events).toEqual(['write', 'flushed']);
    expect(await lines(file)).toHaveLength(3);
    destination.end();
  });

  it('writes the buffered lines before flushSync returns, with no write left in flight', async () => {
    const { file, destination, logger } = await openLog('flushed-sync.log', { flushIntervalMs: 60_000 });
    let asyncBytes = 0;
    destination.on('write', (bytes: number) => (asyncBytes += bytes));
    for (let i = 0; i < 3; i++) logger.info({ i }, 'line');
    destination.flushSync();
    expect(readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(3);
    // An asynchronous write started by flushSync is one an exit would lose (flushSync does not wait for it).
    // A flush calls back once every write in flight has landed (its own is empty): then any such write is seen.
    await new Promise<void>((resolve, reject) =>
      destination.flush((error) => (error === undefined || error === null ? resolve() : reject(error))),
    );
    expect(asyncBytes).toBe(0);
    destination.end();
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
