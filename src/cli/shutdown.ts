import type { Logger } from '../core/logger.ts';

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
        logger.flush(() => process.exit(0));
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        logger.flush(() => process.exit(1));
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
