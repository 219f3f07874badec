import type { Logger } from '../core/logger.ts';

/**
 * How long exit waits for buffered log lines to be written (a stdout nobody reads must not hold it). Short: it
 * counts against the shutdown budget (docs/operations.md § Shutdown).
 */
const LOG_FLUSH_WAIT_MS = 1_000;

/**
 * Exit code of a shutdown that left work unrecorded: jobs whose results could not be written (Redis
 * unreachable) stay active in Redis and run again once their locks expire (docs/cli.md, docs/operations.md).
 */
export const EXIT_UNRECORDED = 3;

/** What closing the rest (metrics server, API, private Redis) may take once the worker pool has closed. */
export const AFTER_POOL_CLOSE_MS = 500;
/**
 * How far past its budget (FERRY_SHUTDOWN_TIMEOUT_MS + FERRY_SHUTDOWN_HANDBACK_MS) a shutdown may run before it
 * is cut short: the pool's own force-close and the steps after it.
 */
export const SHUTDOWN_SLACK_MS = 1_500;

/** What a close step reports; nothing (undefined) means everything in flight was recorded or handed back. */
export interface ShutdownOutcome {
  /** Jobs whose results were not recorded: they run again (at-least-once). Non-zero → EXIT_UNRECORDED. */
  unrecorded?: number;
}

export interface ShutdownOptions {
  /**
   * The most `close` may take: past it the process logs what it was waiting for and exits 1 anyway. A last
   * resort (each close step is bounded on its own), so a bug in one never keeps the process alive.
   */
  limitMs?: number;
}

function flushAndExit(logger: Logger, code: number): void {
  // Whatever is still buffered when the timer wins is written synchronously by pino's exit hook.
  setTimeout(() => process.exit(code), LOG_FLUSH_WAIT_MS).unref();
  logger.flush(() => process.exit(code));
}

/**
 * SIGTERM/SIGINT → run `close` once, then exit: 0 when everything in flight was recorded or handed back,
 * EXIT_UNRECORDED (3) when `close` reports unrecorded results, 1 when closing failed or passed `limitMs`. A
 * second signal exits at once: an operator pressing Ctrl-C twice means it.
 */
export function onShutdownSignal(
  logger: Logger,
  close: () => Promise<ShutdownOutcome | void>,
  options: ShutdownOptions = {},
): void {
  let closing = false;
  let exiting = false;
  const exit = (code: number): void => {
    if (exiting) return;
    exiting = true;
    flushAndExit(logger, code);
  };
  const handler = (signal: NodeJS.Signals): void => {
    if (closing) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal }, 'shutting down: finishing in-flight work');
    const { limitMs } = options;
    if (limitMs !== undefined) {
      // Not unref'd: the process must not linger (nor exit 0) while close is stuck.
      setTimeout(() => {
        logger.error({ limitMs }, `shutdown did not finish within ${limitMs} ms; exiting anyway`);
        exit(1);
      }, limitMs);
    }
    close().then(
      (outcome) => {
        const unrecorded = outcome?.unrecorded ?? 0;
        if (unrecorded > 0) {
          logger.error(
            { unrecorded, exitCode: EXIT_UNRECORDED },
            `shut down with ${unrecorded} result(s) not recorded; those jobs will run again (at-least-once)`,
          );
          exit(EXIT_UNRECORDED);
          return;
        }
        logger.info('shut down cleanly');
        exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
