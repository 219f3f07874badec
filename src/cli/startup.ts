/**
 * Start-up of the long-running commands (`ferry api`, `ferry worker`, `ferry dev`): everything a command opens
 * before it is running is owned here, so a step that fails closes what the earlier steps opened (a Redis
 * connection, a private redis-server, a listening server) instead of leaving it to hold the process open.
 */
import { settleWithin } from '../core/deadline.ts';

/** What one close step may take on a failed start-up: the process must exit within seconds whatever Redis does. */
const CLOSE_STEP_MS = 1_000;

export class StartupResources {
  readonly #closers: (() => unknown)[] = [];

  /** `close` runs if start-up fails: after everything added later, each bounded, its error ignored. */
  add(close: () => unknown): void {
    this.#closers.push(close);
  }

  /** Closes everything added, newest first. Never rejects. */
  async close(): Promise<void> {
    for (const close of this.#closers.splice(0).reverse()) {
      await settleWithin(
        (async () => {
          await close();
        })(),
        CLOSE_STEP_MS,
      );
    }
  }

  /** Runs the start-up steps; when one throws, closes everything added and rethrows its error. */
  async run<T>(start: () => Promise<T>): Promise<T> {
    try {
      return await start();
    } catch (error) {
      await this.close();
      throw error;
    }
  }
}

/** SIGTERM or SIGINT came while a start-up step was waiting (for Redis). */
export class StartupStopped extends Error {
  override readonly name = 'StartupStopped';
  readonly signal: NodeJS.Signals;

  constructor(signal: NodeJS.Signals) {
    super(`stopped by ${signal} while starting`);
    this.signal = signal;
  }
}

/**
 * Runs `step` with SIGTERM/SIGINT turned into an abort of its signal (the step must then reject), for the
 * steps before the command's own shutdown handler is installed: `docker stop` of a worker still waiting for
 * Redis must not wait out its grace period. Rejects with StartupStopped when a signal came, even if the step
 * succeeded anyway (its value then goes to `dispose`).
 */
export async function stoppable<T>(
  step: (signal: AbortSignal) => Promise<T>,
  logger?: { info(obj: object, msg: string): void },
  dispose?: (value: T) => unknown,
): Promise<T> {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    received ??= signal;
    controller.abort();
  };
  const stopped = (signal: NodeJS.Signals): StartupStopped => {
    logger?.info({ signal }, `${signal} while starting: stopped`);
    return new StartupStopped(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let value: T;
  try {
    value = await step(controller.signal);
  } catch (error) {
    if (received !== undefined) throw stopped(received);
    throw error;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
  // A signal the step finished despite (Redis answered just as it came) still stops the command: swallowed
  // here, it would leave the process running after its SIGTERM until the supervisor's SIGKILL.
  if (received !== undefined) {
    await dispose?.(value);
    throw stopped(received);
  }
  return value;
}
