import {
  AuthenticationError,
  ClientError,
  type FerryError,
  isFerryError,
  NetworkError,
  RateLimitedError,
  ServerError,
  TimeoutError,
  ValidationError,
} from '../../core/errors.ts';

/** Why a call was aborted: Ferry aborts with one of these reasons, so an abort can be told apart. */
export type AbortReason = 'timeout' | 'shutdown' | 'cancelled';

export class AttemptAbortedError extends Error {
  override readonly name = 'AttemptAbortedError';
  readonly reason: AbortReason;
  constructor(reason: AbortReason) {
    super(`attempt aborted: ${reason}`);
    this.reason = reason;
  }
}

/** Classifies a response status. 2xx is success and never reaches here. */
export function classifyStatus(status: number, retryAfterMs: number | undefined): FerryError {
  const options = { status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
  if (status === 429) return new RateLimitedError('downstream answered 429 Too Many Requests', options);
  if (status === 401 || status === 403)
    return new AuthenticationError(`downstream answered ${status}`, options);
  if (status >= 500) return new ServerError(`downstream answered ${status}`, options);
  if (status >= 300 && status < 400)
    return new ClientError(`downstream answered ${status} (redirects are not followed)`, options);
  return new ClientError(`downstream answered ${status}`, options);
}

/** undici error codes → class. Anything unknown from the network layer is a NetworkError (retryable). */
const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);
const INVALID_REQUEST_CODES = new Set([
  'UND_ERR_INVALID_ARG',
  'ERR_INVALID_URL',
  'ERR_INVALID_CHAR',
  'ERR_INVALID_HTTP_TOKEN',
]);

/** Classifies anything thrown while calling: undici errors, system errors, aborts. */
export function classifyError(error: unknown): FerryError {
  if (isFerryError(error)) return error;
  if (error instanceof AttemptAbortedError) {
    return new TimeoutError(
      error.reason === 'timeout' ? 'attempt exceeded its timeout' : `attempt aborted (${error.reason})`,
      { cause: error },
    );
  }
  const code = errorCode(error);
  const message = error instanceof Error ? error.message : String(error);
  // undici refuses CR/LF in header values itself; that is a bad job or template, not a network fault.
  if (code !== undefined && INVALID_REQUEST_CODES.has(code))
    return new ValidationError(`invalid request: ${message}`, { cause: error });
  if (code !== undefined && TIMEOUT_CODES.has(code))
    return new TimeoutError(`${code}: ${message}`, { cause: error });
  return new NetworkError(code === undefined ? message : `${code}: ${message}`, { cause: error });
}

function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current !== null && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Failures that say the service is unhealthy; only these count toward opening its breaker (DESIGN §4). */
export function isUnhealthyFailure(error: unknown): boolean {
  return (
    isFerryError(error) &&
    (error.type === 'TimeoutError' || error.type === 'NetworkError' || error.type === 'ServerError')
  );
}
