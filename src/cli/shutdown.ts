import type { Logger } from '../core/logger.ts';

/** How long exit waits for buffered log lines to be written (a stdout nobody reads must not hold it). */
const LOG_FLUSH_WAIT_MS = 2_000;

function flushAndExit(logger: Logger, code: number): void {
  // Whatever is still buffered when the timer wins is written synchronously by pino's exit hook.
  setTimeout(() => process.exit(code), LOG_FLUSH_WAIT_MS).unref();
  logger.flush(() => process.exit(code));
}

/**
 * SIGTERM/SIGINT → run `close` once, then exit 0 (1 if closing failed). A second signal exits at once:
 * an operator pressing Ctrl-C twice means it.
 */
export function onShutdownSignal(logger: Logger, close: () => Promise<void>): void {
  let closing = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (closing) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal }, 'shutting down: finishing in-flight work');
    close().then(
      () => {
        logger.info('shut down cleanly');
        flushAndExit(logger, 0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        flushAndExit(logger, 1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
