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
  /**
   * Applied to every serialized line before it is written: the secrets module's value scrubbing (known secret
   * values and tokens anywhere in a line, after the redact paths have censored the known fields).
   */
  scrub?: (line: string) => string;
}

/** Default of FERRY_LOG_BUFFER_BYTES. */
export const DEFAULT_LOG_BUFFER_BYTES = 4096;
/** Cap of FERRY_LOG_BUFFER_BYTES: larger batches gained nothing in the bench and only delay lines. */
export const MAX_LOG_BUFFER_BYTES = 16 * 1024 - 1;
/** The longest a buffered line waits for the buffer to fill before it is written anyway. */
const LOG_FLUSH_INTERVAL_MS = 100;

export interface LogDestinationOptions {
  /** A file path or descriptor; default 1 (stdout). */
  dest?: string | number;
  /**
   * Lines are collected up to about this many bytes (counted as characters, so no line is scanned for its
   * UTF-8 length) or for LOG_FLUSH_INTERVAL_MS, and written together; 0 writes each line as soon as the
   * previous write is done. One write per line was the largest single cost of a job in the throughput bench (a
   * write system call on the libuv pool per line). Lines still buffered when the process is SIGKILLed are lost;
   * shutdown, exit and uncaught errors flush them.
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
  // pino.destination rather than a SonicBoom of our own: pino flushes the streams it made on exit. minLength 1,
  // not 0: each batch is still written at once, but flush(cb) waits for the write (with 0 it calls back at once).
  const destination = pino.destination({ dest, sync: false, mkdir: typeof dest === 'string', minLength: 1 });
  if (bufferBytes > 0) {
    batchLines(destination, bufferBytes, options.flushIntervalMs ?? LOG_FLUSH_INTERVAL_MS);
  }
  return destination;
}

/**
 * Collects lines in front of SonicBoom and hands them over a batch at a time. SonicBoom's own buffering
 * (`minLength`) measures the whole pending buffer's byte length again for every line it appends, and its
 * periodic flush fsyncs, idle or not. Here a line costs an array push, and a batch is one join and one write:
 * about 1.5 µs less per line (bench/HISTORY.md, item 21).
 *
 * The stream's own flush, flushSync and end take the pending lines first, so every way the stream is flushed
 * (Ferry's shutdown, pino's exit hooks on exit and on an uncaught error) still writes them.
 */
function batchLines(stream: LogDestination, bufferBytes: number, flushIntervalMs: number): void {
  const writeNow = stream.write.bind(stream);
  let pending: string[] = [];
  let pendingLength = 0;
  let ended = false;
  const takePending = (): void => {
    if (pending.length === 0) return;
    // Lines logged after end(): SonicBoom would throw, and from the timer that would crash the process.
    if (ended) {
      pending = [];
      pendingLength = 0;
      return;
    }
    const batch = pending.length === 1 ? pending[0]! : pending.join('');
    pending = [];
    pendingLength = 0;
    writeNow(batch);
  };
  stream.write = (line: string): boolean => {
    pending.push(line);
    pendingLength += line.length;
    if (pendingLength >= bufferBytes) takePending();
    return true;
  };
  const flush = stream.flush.bind(stream);
  stream.flush = (callback?: (error?: Error) => void): void => {
    takePending();
    flush(callback);
  };
  const flushSync = stream.flushSync.bind(stream);
  stream.flushSync = (): void => {
    // The batch must land in SonicBoom's buffer, which flushSync writes: handed over as usual it would start an
    // asynchronous write, which flushSync skips and an exit then loses.
    // `minLength` is the option's live field (sonic-boom 4 and 5; not in its types); logger.test.ts pins this.
    const tunable = stream as unknown as { minLength: number };
    const minLength = tunable.minLength;
    tunable.minLength = Number.MAX_SAFE_INTEGER;
    try {
      takePending();
    } finally {
      tunable.minLength = minLength;
    }
    flushSync();
  };
  const end = stream.end.bind(stream);
  stream.end = (): void => {
    takePending();
    ended = true;
    end();
  };
  const destroy = stream.destroy.bind(stream);
  stream.destroy = (): void => {
    ended = true;
    destroy();
  };
  const timer = setInterval(takePending, flushIntervalMs).unref();
  stream.once('close', () => clearInterval(timer));
}

export function createLogger(options: LoggerFactoryOptions = {}): Logger {
  const config: LoggerOptions = {
    level: options.level ?? 'info',
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    base: options.name === undefined ? { pid: process.pid } : { pid: process.pid, name: options.name },
    ...(options.scrub === undefined ? {} : { hooks: { streamWrite: options.scrub } }),
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
