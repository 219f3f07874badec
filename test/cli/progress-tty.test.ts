/**
 * The replay progress bar on a real terminal: `ferry dlq replay` inside a detached tmux session (a pty), the
 * pane captured while it runs. .ci/run installs tmux; this test does not install anything.
 */
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { deadLettersOnTty } from '../helpers/dead-letter-tty.ts';
import { ROOT } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

describe('progress bar on a TTY', () => {
  it('ferry dlq replay draws count, percentage, rate and ETA in place', async () => {
    const { kit, servicesFile, tmux } = await deadLettersOnTty(redis, 60);
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
