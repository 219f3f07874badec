/** The rate cap of a bulk run (`ferry dlq replay --rate`, `ratePerSecond` of the API's replay). */
import { SECOND } from '../core/time.ts';

/**
 * Paces adds: each turn starts at least 1 / rate seconds after the previous turn actually started, and turns
 * are taken one after another, so however late a timer fires or however slow one add is, no two adds are
 * closer than the interval and the measured rate never exceeds the cap (a schedule fixed up front let a late
 * first add be followed by on-time ones: 31 adds at 20/s took 1.3 s instead of 1.5 s under load). A pause
 * earns no burst. `wait` resolves false when the signal aborts (at once, also while waiting).
 */
export function createPacer(
  ratePerSecond: number | undefined,
  signal: AbortSignal | undefined,
): { wait(): Promise<boolean>; dispose(): void } {
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve;
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  const dispose = (): void => signal?.removeEventListener('abort', onAbort!);
  if (ratePerSecond === undefined) return { wait: () => Promise.resolve(signal?.aborted !== true), dispose };
  const intervalMs = SECOND / ratePerSecond;
  let last = -Infinity;
  let turns: Promise<boolean> = Promise.resolve(true);
  const isAborted = (): boolean => signal?.aborted === true;
  return {
    wait() {
      turns = turns.then(async (going) => {
        if (!going || isAborted()) return false;
        const waitMs = Math.ceil(last + intervalMs - performance.now());
        if (waitMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([new Promise((resolve) => (timer = setTimeout(resolve, waitMs))), aborted]);
          clearTimeout(timer);
        }
        if (isAborted()) return false;
        last = performance.now();
        return true;
      });
      return turns;
    },
    dispose,
  };
}
