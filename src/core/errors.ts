/**
 * Ferry's error taxonomy (DESIGN §4). Every `type` is a stable string that users match on: it appears on
 * attempts, dead letters, events and metrics. Never rename or reuse one; docs/errors.md documents each and
 * test/core/errors.test.ts keeps the two in sync.
 */

export type ErrorType =
  | 'TimeoutError'
  | 'NetworkError'
  | 'ServerError'
  | 'RateLimitedError'
  | 'AuthenticationError'
  | 'ClientError'
  | 'CircuitOpenError'
  | 'ResponseTooLargeError'
  | 'ValidationError'
  | 'ConfigurationError'
  | 'EgressDeniedError'
  | 'TlsError';

export interface FerryErrorOptions {
  /** HTTP status of the downstream response, when there was one. */
  status?: number;
  /** Wait the downstream asked for (Retry-After), already parsed and clamped. */
  retryAfterMs?: number;
  /** The input field at fault, for ValidationError (`input.email`, `services.crm.timeoutMs`). */
  field?: string;
  cause?: unknown;
}

export abstract class FerryError extends Error {
  abstract readonly type: ErrorType;
  /** Whether another attempt may succeed. Per-service `retry.retryOn` can widen this for status codes. */
  abstract readonly retryable: boolean;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;
  readonly field: string | undefined;

  constructor(message: string, options: FerryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
    this.field = options.field;
  }

  override get name(): string {
    return this.type;
  }
}

export class TimeoutError extends FerryError {
  readonly type = 'TimeoutError';
  readonly retryable = true;
}
export class NetworkError extends FerryError {
  readonly type = 'NetworkError';
  readonly retryable = true;
}
export class ServerError extends FerryError {
  readonly type = 'ServerError';
  readonly retryable = true;
}
export class RateLimitedError extends FerryError {
  readonly type = 'RateLimitedError';
  readonly retryable = true;
}
export class AuthenticationError extends FerryError {
  readonly type = 'AuthenticationError';
  readonly retryable = false;
}
export class ClientError extends FerryError {
  readonly type = 'ClientError';
  readonly retryable = false;
}
export class CircuitOpenError extends FerryError {
  readonly type = 'CircuitOpenError';
  readonly retryable = true;
}
export class ResponseTooLargeError extends FerryError {
  readonly type = 'ResponseTooLargeError';
  readonly retryable = false;
}
export class ValidationError extends FerryError {
  readonly type = 'ValidationError';
  readonly retryable = false;
}
export class ConfigurationError extends FerryError {
  readonly type = 'ConfigurationError';
  readonly retryable = false;
}

/**
 * The call would reach an address the egress policy refuses (link-local, cloud metadata, or a private range
 * for a host the services file does not name literally), or a secret or env value tried to fill more of a
 * baseUrl than its host. Refused before any connection is opened; never retried.
 */
export class EgressDeniedError extends FerryError {
  readonly type = 'EgressDeniedError';
  readonly retryable = false;
}

/**
 * The downstream's TLS certificate was not trusted: unknown issuer, self-signed, expired or not yet valid, or
 * issued for another host name. Set the service's `tls.ca` (or fix the server); never retried. A client
 * certificate the server refuses is an AuthenticationError instead.
 */
export class TlsError extends FerryError {
  readonly type = 'TlsError';
  readonly retryable = false;
}

export const ERROR_TYPES: readonly ErrorType[] = Object.freeze([
  'TimeoutError',
  'NetworkError',
  'ServerError',
  'RateLimitedError',
  'AuthenticationError',
  'ClientError',
  'CircuitOpenError',
  'ResponseTooLargeError',
  'ValidationError',
  'ConfigurationError',
  'EgressDeniedError',
  'TlsError',
]);

const errorTypeSet = new Set<string>(ERROR_TYPES);

/** Brand check: works across module copies and on values that crossed Redis, unlike `instanceof`. */
export function isFerryError(value: unknown): value is FerryError {
  return value instanceof Error && errorTypeSet.has((value as unknown as { type?: unknown }).type as string);
}

export function isErrorType(value: unknown): value is ErrorType {
  return typeof value === 'string' && errorTypeSet.has(value);
}

/** What crosses Redis: a plain record, never a serialized class instance. */
export interface ErrorRecord {
  type: ErrorType;
  message: string;
  status?: number;
  retryAfterMs?: number;
  field?: string;
}

export function toErrorRecord(error: FerryError, scrub: (text: string) => string = identity): ErrorRecord {
  const record: ErrorRecord = { type: error.type, message: scrub(error.message) };
  if (error.status !== undefined) record.status = error.status;
  if (error.retryAfterMs !== undefined) record.retryAfterMs = error.retryAfterMs;
  if (error.field !== undefined) record.field = error.field;
  return record;
}

function identity(text: string): string {
  return text;
}
