/**
 * Response headers a job's result keeps (everything else, cookies and auth echoes included, is dropped): the
 * worker filters a response with it, and the services file refuses a `{{ result.headers.<name> }}` outside it,
 * which would otherwise always be empty. Lower-case, as undici gives them.
 */
export const RESULT_HEADERS: ReadonlySet<string> = new Set([
  'content-type',
  'content-length',
  'location',
  'etag',
  'last-modified',
  'retry-after',
  'x-request-id',
  'request-id',
  'x-correlation-id',
  'x-ratelimit-limit',
  'x-ratelimit-remaining',
  'x-ratelimit-reset',
  'ratelimit-limit',
  'ratelimit-remaining',
  'ratelimit-reset',
]);
