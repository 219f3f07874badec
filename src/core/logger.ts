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
  /** Where JSON lines go (tests capture them); default createLogDestination() on stdout. */
  destination?: DestinationStream;
  /** For the default destination: see LogDestinationOptions.bufferBytes. */
  bufferBytes?: number;
  name?: string;
}

/** Default of FERRY_LOG_BUFFER_BYTES. */
export const DEFAULT_LOG_BUFFER_BYTES = 4096;
/** SonicBoom refuses a minLength that is not below its maxWrite (16 KiB by default). */
export const MAX_LOG_BUFFER_BYTES = 16 * 1024 - 1;
/** The longest a buffered line waits for the buffer to fill before it is written anyway. */
const LOG_FLUSH_INTERVAL_MS = 100;

export interface LogDestinationOptions {
  /** A file path or descriptor; default 1 (stdout). */
  dest?: string | number;
  /**
   * Lines are collected up to this many bytes (or for LOG_FLUSH_INTERVAL_MS) and written together; 0 writes
   * each line as soon as the previous write is done. One write per line was the largest single cost of a job
   * in the throughput bench (a write system call on the libuv pool per line). Lines still buffered when the
   * process is SIGKILLed are lost; shutdown, exit and uncaught errors flush them.
   */
  bufferBytes?: number;
  /** How long a buffered line may wait; default LOG_FLUSH_INTERVAL_MS. */
  flushIntervalMs?: number;
}

export type LogDestination = ReturnType<typeof pino.destination>;

/** Ferry's log destination: asynchronous (no synchronous I/O on the worker's hot path), buffered. */
export function createLogDestination(options: LogDestinationOptions = {}): LogDestination {
  const bufferBytes = options.bufferBytes ?? DEFAULT_LOG_BUFFER_BYTES;
  const dest = options.dest ?? 1;
  return pino.destination({
    dest,
    sync: false,
    mkdir: typeof dest === 'string',
    minLength: bufferBytes,
    periodicFlush: bufferBytes > 0 ? (options.flushIntervalMs ?? LOG_FLUSH_INTERVAL_MS) : 0,
  });
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
  return pino(config, createLogDestination({ bufferBytes: options.bufferBytes }));
}

function hasPinoPretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}
