/**
 * The API's error responses: one body shape, `{ error: { type, message, field? } }`, and one mapping from
 * what went wrong to a status. Delivery errors (core/errors.ts) keep their own `type`; the API adds the few
 * types that only exist at the HTTP edge. Like the delivery types, these strings are stable: clients match
 * on them (docs/api.md lists each).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';

import { isFerryError } from '../core/errors.ts';
import { SECOND } from '../core/time.ts';
import { isReplicaTimeoutError } from '../producer/replicas.ts';

export const API_ERROR_TYPES = [
  'UnauthorizedError',
  'ForbiddenError',
  'NotFoundError',
  'ConflictError',
  'PayloadTooLargeError',
  'UnsupportedMediaTypeError',
  'UnavailableError',
  'InternalError',
] as const;
export type ApiErrorType = (typeof API_ERROR_TYPES)[number];

export interface ErrorBody {
  error: { type: string; message: string; field?: string };
}

/** An error the API answers with as is: status, type and message are meant for the client. */
export abstract class ApiError extends Error {
  abstract readonly type: ApiErrorType;
  abstract readonly statusCode: number;
  override get name(): string {
    return this.type;
  }
}

/** No token, or one that matches none configured. */
export class UnauthorizedError extends ApiError {
  readonly type = 'UnauthorizedError';
  readonly statusCode = 401;
}
/** A valid token without the scope, service or tenant the request needs. */
export class ForbiddenError extends ApiError {
  readonly type = 'ForbiddenError';
  readonly statusCode = 403;
}
export class NotFoundError extends ApiError {
  readonly type = 'NotFoundError';
  readonly statusCode = 404;
}
/** The resource is in a state that does not allow the request (cancel an active job). */
export class ConflictError extends ApiError {
  readonly type = 'ConflictError';
  readonly statusCode = 409;
}
/**
 * Redis cannot be reached. The client should retry after `retryAfterSeconds`; an enqueue that timed out may
 * still have happened, which the idempotency key makes safe to repeat (DESIGN §8).
 */
export class UnavailableError extends ApiError {
  readonly type = 'UnavailableError';
  readonly statusCode = 503;
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds = UNAVAILABLE_RETRY_AFTER_SECONDS) {
    super(message);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** What a client is told to wait when Redis is down: long enough for a reconnect, short enough to matter. */
export const UNAVAILABLE_RETRY_AFTER_SECONDS = 5;
/** How long a request may wait for Redis to come back before it gets a 503 (the "bounded time"). */
export const REDIS_WAIT_MS = 2 * SECOND;

/**
 * Errors ioredis and BullMQ raise when Redis is unreachable. ioredis gives no error classes for these, so they
 * are matched on their messages (ioredis 5/6: `lib/Redis.ts` "Stream isn't writeable…", `Command.ts`
 * "Command timed out", `MaxRetriesPerRequestError`), plus socket-level codes.
 */
const REDIS_DOWN_MESSAGES =
  /Stream isn't writeable|enableOfflineQueue|Command timed out|Connection is closed|Reached the max retries per request|Redis was not ready|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTCONN|EHOSTUNREACH/;

/**
 * A Redis Cluster in the middle of a failover or a slot migration (ioredis 6 `lib/cluster/index.ts`): the
 * client gave up after `maxRedirections` retries of MOVED, ASK, TRYAGAIN, CLUSTERDOWN or a closed connection
 * ("Too many Cluster redirections. Last error: …"), or lost every node. A master's kill -9 answered 500 with
 * "…Last error: MOVED <slot> <dead master>" before the replica took over (test/cluster/failover.test.ts).
 */
const CLUSTER_SWITCH_MESSAGES =
  /^Too many Cluster redirections|^(CLUSTERDOWN|TRYAGAIN|MOVED|ASK) |None of startup nodes is available|Failed to refresh slots cache|^Cluster is (ended|disconnect)/;

export function isRedisUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as NodeJS.ErrnoException).code;
  return (
    error.name === 'MaxRetriesPerRequestError' ||
    (code !== undefined && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTCONN|EHOSTUNREACH)$/.test(code)) ||
    REDIS_DOWN_MESSAGES.test(error.message) ||
    CLUSTER_SWITCH_MESSAGES.test(error.message)
  );
}

/**
 * Redis is up but refuses writes: out of memory under `noeviction` (OOM), a replica after a failover
 * (READONLY), a failed snapshot with stop-writes-on-bgsave-error (MISCONF), too few replicas (NOREPLICAS),
 * still loading its data (LOADING), or a replica whose master is down (MASTERDOWN). Like a Redis that is down,
 * this passes: the client is told to retry, never given a 500. Matched on the reply's error code, at the start
 * of the message or after the `-` of an error raised inside a script.
 */
const REDIS_REFUSAL = /(?:^|-)(OOM|READONLY|MISCONF|NOREPLICAS|LOADING|MASTERDOWN) /;

/** The error code when Redis refused the command (see REDIS_REFUSAL), else undefined. */
export function redisRefusal(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  return REDIS_REFUSAL.exec(error.message)?.[1];
}

/** Status of a ValidationError: 413 for size, 422 for a well-formed request naming what does not exist, else 400. */
function validationStatus(error: { status: number | undefined; field: string | undefined }): number {
  if (error.status === 413 || error.status === 422) return error.status;
  return 400;
}

interface Mapped {
  statusCode: number;
  body: ErrorBody;
  headers?: Record<string, string>;
}

/** Maps anything thrown by a route (or by Fastify itself) to a status and the error body. */
export function toErrorResponse(error: unknown): Mapped {
  if (error instanceof ApiError) {
    return {
      statusCode: error.statusCode,
      body: { error: { type: error.type, message: error.message } },
      ...(error instanceof UnavailableError
        ? { headers: { 'retry-after': String(error.retryAfterSeconds) } }
        : {}),
    };
  }
  if (isFerryError(error)) {
    const statusCode = error.type === 'ValidationError' ? validationStatus(error) : 500;
    const body: ErrorBody = { error: { type: error.type, message: error.message } };
    if (error.field !== undefined) body.error.field = error.field;
    return { statusCode, body };
  }
  // FERRY_ENQUEUE_MIN_REPLICAS not met in time: the job may be in Redis, the idempotency key makes a retry safe.
  if (isReplicaTimeoutError(error)) return toErrorResponse(new UnavailableError(error.message));
  if (isRedisUnavailable(error)) {
    const unavailable = new UnavailableError('Redis is unavailable; retry later');
    return toErrorResponse(unavailable);
  }
  const refusal = redisRefusal(error);
  if (refusal !== undefined) {
    return toErrorResponse(new UnavailableError(`Redis refuses writes (${refusal}); retry later`));
  }
  const fastifyError = error as Partial<FastifyError>;
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return plain(413, 'PayloadTooLargeError', fastifyError.message ?? 'request body too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return plain(415, 'UnsupportedMediaTypeError', 'send the body as application/json');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return validation(400, `body is not valid JSON: ${fastifyError.message ?? ''}`, 'body');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return validation(400, fastifyError.message ?? 'bad request body', 'body');
  }
  if (error instanceof SyntaxError && (error as Partial<FastifyError>).statusCode === 400) {
    return validation(400, `body is not valid JSON: ${error.message}`, 'body');
  }
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    return validation(status, fastifyError.message ?? 'bad request', undefined);
  }
  return plain(500, 'InternalError', 'internal error');
}

function plain(statusCode: number, type: ApiErrorType, message: string): Mapped {
  return { statusCode, body: { error: { type, message } } };
}

function validation(statusCode: number, message: string, field: string | undefined): Mapped {
  return {
    statusCode,
    body: { error: { type: 'ValidationError', message, ...(field === undefined ? {} : { field }) } },
  };
}

/**
 * What of an error goes into a log line: type, message, code and stack. Not the error's own fields: an ioredis
 * reply error carries the command's arguments, which for an enqueue are the whole job (input, metadata).
 */
function loggableError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const code = (error as NodeJS.ErrnoException).code;
  return {
    type: error.name,
    message: error.message,
    ...(code === undefined ? {} : { code }),
    ...(error.stack === undefined ? {} : { stack: error.stack }),
  };
}

/** Fastify error handler: the mapped answer; 5xx other than 503 are logged with their cause. */
export function handleError(error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const mapped = toErrorResponse(error);
  if (mapped.statusCode >= 500 && mapped.statusCode !== 503) {
    request.log.error({ err: loggableError(error) }, 'request failed');
  } else if (mapped.statusCode === 503) {
    request.log.warn(
      { err: loggableError(error) },
      isReplicaTimeoutError(error)
        ? 'Redis replicas did not acknowledge the enqueue in time'
        : redisRefusal(error) === undefined
          ? 'Redis unavailable'
          : 'Redis refuses writes',
    );
  }
  if (mapped.headers !== undefined) void reply.headers(mapped.headers);
  void reply.code(mapped.statusCode).send(mapped.body);
}
