/**
 * `stoppable` turns SIGTERM/SIGINT during a start-up step (waiting for Redis) into StartupStopped. A signal the
 * step finished despite used to be dropped: the command went on starting, and the process ignored its SIGTERM
 * until the supervisor's SIGKILL. The step calls the listener stoppable added, rather than signalling the
 * process: vitest has SIGTERM listeners of its own.
 */
import { describe, expect, it } from 'vitest';

import { StartupStopped, stoppable } from '../../src/cli/startup.ts';

function addedListener(before: ReadonlySet<unknown>): (signal: NodeJS.Signals) => void {
  const added = process.listeners('SIGTERM').filter((listener) => !before.has(listener));
  expect(added).toHaveLength(1);
  return added[0]!;
}

describe('stoppable', () => {
  it('stops the start when a signal came, even if the step then succeeded, and disposes of its value', async () => {
    const before = new Set(process.listeners('SIGTERM'));
    const disposed: string[] = [];
    const result = stoppable(
      async () => {
        addedListener(before)('SIGTERM');
        return 'connection';
      },
      undefined,
      (value) => {
        disposed.push(value);
      },
    );
    await expect(result).rejects.toEqual(new StartupStopped('SIGTERM'));
    expect(disposed).toEqual(['connection']);
    expect(process.listeners('SIGTERM').filter((listener) => !before.has(listener))).toEqual([]);
  });

  it('stops the start when the step rejects after a signal (its abort)', async () => {
    const before = new Set(process.listeners('SIGTERM'));
    let aborted = false;
    const result = stoppable(async (signal) => {
      addedListener(before)('SIGINT');
      aborted = signal.aborted;
      throw new Error('aborted');
    });
    await expect(result).rejects.toEqual(new StartupStopped('SIGINT'));
    expect(aborted).toBe(true);
  });

  it('returns the value and disposes of nothing without a signal', async () => {
    const disposed: string[] = [];
    const value = await stoppable(
      async () => 'connection',
      undefined,
      (v) => {
        disposed.push(v);
      },
    );
    expect(value).toBe('connection');
    expect(disposed).toEqual([]);
  });
});
