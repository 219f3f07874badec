/**
 * The replay progress bar on a real terminal: `ferry dlq replay` inside a detached tmux session (a pty), the
 * pane captured while it runs. .ci/run installs tmux; this test does not install anything.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it, onTestFinished } from 'vitest';

import { deadLetterKit } from '../dead-letter/support.ts';
import { ROOT, writeServicesFile } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

const run = promisify(execFile);
const redis = await startRedis();

describe('progress bar on a TTY', () => {
  it('ferry dlq replay draws count, percentage, rate and ETA in place', async () => {
    const servicesFile = await writeServicesFile({
      services: {
        crm: { baseUrl: 'http://127.0.0.1:9', operations: { createContact: { method: 'POST', path: '/c' } } },
      },
    });
    const kit = deadLetterKit(redis);
    for (let i = 0; i < 60; i++) await kit.write({ deadLetteredAt: Date.now() - 60_000 });
    const socket = `ferry-test-${kit.prefix}`;
    const tmux = (...args: string[]): Promise<{ stdout: string }> => run('tmux', ['-L', socket, ...args]);
    const command = [
      'env',
      `REDIS_URL=${redis.url}`,
      `FERRY_SERVICES=${servicesFile}`,
      `FERRY_PREFIX=${kit.prefix}`,
      process.execPath,
      join(ROOT, 'dist', 'cli', 'main.js'),
      'dlq',
      'replay',
      '--all',
      '--yes',
      '--rate',
      '20/s',
      ';',
      'sleep',
      '30',
    ].join(' ');
    await tmux('new-session', '-d', '-s', 'ferry', '-x', '120', '-y', '10', command);
    onTestFinished(async () => {
      await tmux('kill-server').catch(() => undefined);
    });

    const pane = async (): Promise<string> => (await tmux('capture-pane', '-p', '-t', 'ferry')).stdout;
    // While it runs: a bar, done/total, a percentage, a rate and an ETA, on one line redrawn in place.
    await expect
      .poll(pane, { timeout: 10_000, interval: 100 })
      .toMatch(/\[=*>? *\] ([1-9]\d*)\/60 \d+% \d+\.\d\/s ETA (\d+(\.\d)?s|\d+ms)/);
    const during = await pane();
    expect(during.split('\n').filter((line) => line.includes('/60 ')).length).toBe(1);
    expect(during).not.toContain('{"done"');
    // At the end: the full bar and the summary.
    await expect
      .poll(pane, { timeout: 15_000, interval: 200 })
      .toMatch(/done: 60 replayed, 0 skipped, 0 failed/);
    expect(await pane()).toMatch(/\[=+\] 60\/60 100%/);
  });
});
