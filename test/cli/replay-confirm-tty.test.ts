/**
 * `ferry dlq replay --all` on a real terminal (issue 18 item 5): inside a detached tmux session (a pty) it asks
 * first, as `dlq purge` does; "n" replays nothing (exit 2), "y" replays every dead letter.
 */
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { deadLettersOnTty } from '../helpers/dead-letter-tty.ts';
import { ROOT } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

describe('dlq replay --all on a TTY', () => {
  it('asks first: "n" replays nothing (exit 2), "y" replays them all (exit 0)', async () => {
    const { kit, servicesFile, tmux } = await deadLettersOnTty(redis, 3);
    const command = (session: string): string =>
      [
        'env',
        `REDIS_URL=${redis.url}`,
        `FERRY_SERVICES=${servicesFile}`,
        `FERRY_PREFIX=${kit.prefix}`,
        process.execPath,
        join(ROOT, 'dist', 'cli', 'main.js'),
        'dlq',
        'replay',
        '--all',
        ';',
        'echo',
        `${session}-exit=$?`,
        ';',
        'sleep',
        '30',
      ].join(' ');
    const pane = async (session: string): Promise<string> =>
      (await tmux('capture-pane', '-p', '-t', session)).stdout;

    await tmux('new-session', '-d', '-s', 'no', '-x', '120', '-y', '10', command('no'));
    await expect
      .poll(() => pane('no'), { timeout: 15_000, interval: 100 })
      .toContain('Replay all 3 dead letter(s)? [y/N]');
    await tmux('send-keys', '-t', 'no', 'n', 'Enter');
    await expect.poll(() => pane('no'), { timeout: 15_000, interval: 100 }).toContain('no-exit=2');
    expect(await pane('no')).toContain('not confirmed: nothing replayed');
    expect(await kit.reader.countByService()).toEqual(new Map([['crm', 3]]));

    await tmux('new-session', '-d', '-s', 'yes', '-x', '120', '-y', '10', command('yes'));
    await expect
      .poll(() => pane('yes'), { timeout: 15_000, interval: 100 })
      .toContain('Replay all 3 dead letter(s)? [y/N]');
    await tmux('send-keys', '-t', 'yes', 'y', 'Enter');
    await expect.poll(() => pane('yes'), { timeout: 15_000, interval: 100 }).toContain('yes-exit=0');
    expect(await pane('yes')).toMatch(/done: 3 replayed, 0 skipped, 0 failed/);
    expect((await kit.reader.countByService()).get('crm') ?? 0).toBe(0);
  });
});
