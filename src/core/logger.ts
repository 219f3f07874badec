import { createRequire } from 'node:module';

import { type DestinationStream, type Logger, type LoggerOptions, pino } from 'pino';

export type { Logger } from 'pino';

/**
 * The one list of redacted paths. Secret *values* are also scrubbed from messages before they are logged
 * (see secrets/scrub.ts); this list is the second line of defence for structured fields.
 */
export const REDACT_PATHS: readonly string[] = [
  'authorization',
  'password',
  'token',
  'clientSecret',
  'secret',
  'secrets',
  '*.authorization',
  '*.Authorization',
  '*.password',
  '*.token',
  '*.clientSecret',
  '*.secret',
  '*.secrets',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  'req.headers.authorization',
  'req.headers.cookie',
];

export interface LoggerFactoryOptions {
  level?: string;
  /** Human-readable output (pino-pretty, when installed) instead of JSON; dev only. */
  pretty?: boolean;
  /** Where JSON lines go (tests capture them); default stdout, written asynchronously. */
  destination?: DestinationStream;
  name?: string;
}

export function createLogger(options: LoggerFactoryOptions = {}): Logger {
  const config: LoggerOptions = {
    level: options.level ?? 'info',
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    base: options.name === undefined ? { pid: process.pid } : { pid: process.pid, name: options.name },
  };
  if (options.destination !== undefined) return pino(config, options.destination);
  if (options.pretty === true && hasPinoPretty()) {
    return pino({
      ...config,
      transport: {
        target: 'pino-pretty',
        options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
      },
    });
  }
  // Asynchronous writes: no synchronous I/O on the worker's hot path. Flushed on shutdown.
  return pino(config, pino.destination({ dest: 1, sync: false }));
}

function hasPinoPretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}
