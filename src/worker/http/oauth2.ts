/**
 * OAuth2 client-credentials tokens (RFC 6749 §4.4) for services with `auth.type: oauth2` (DESIGN §2): one
 * cache per worker pool, one token per service × tenant × credentials, fetched one at a time and kept until
 * shortly before it expires. The processor asks for a token per attempt, and after a 401 with a cached token
 * drops it (`invalidate`) and asks again, once.
 *
 * A token request goes the way the service's calls go (issue 17): through the service's `proxy:` (a URL, `none`
 * or the environment's), and with its `tls:` client certificate (RFC 8705 §2: mutual-TLS client
 * authentication at the token endpoint). The service's `ca` and `servername` name the baseUrl's server: the
 * token endpoint on the same host is verified exactly as the calls are; one on another host is verified
 * against the service's `ca` and Node's bundled roots, with its own name (see tokenTransport).
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { rootCertificates } from 'node:tls';

import type { Dispatcher } from 'undici';

import {
  AuthenticationError,
  ConfigurationError,
  type FerryError,
  type FerryErrorOptions,
  isFerryError,
  ResponseTooLargeError,
  ServerError,
  TimeoutError,
} from '../../core/errors.ts';
import type { OAuth2Auth, TemplateContext } from '../../core/services/types.ts';
import { type Clock, MINUTE, SECOND } from '../../core/time.ts';
import type { SecretObserver } from '../../secrets/resolver.ts';
import { Scrubber } from '../../secrets/scrub.ts';
import { readRetryAfter, type RetryAfterClampedListener } from '../retry-after.ts';
import { AttemptAbortedError, classifyError, classifyStatus } from './classify.ts';
import { checkOriginHost, TOKEN_ENDPOINT_SCOPE } from './egress.ts';
import { PoolSet } from './pools.ts';
import { ERROR_BODY_MAX_BYTES } from './response.ts';
import {
  classifyTlsError,
  DEFAULT_TRANSPORT,
  observeTransport,
  type ProxyEnv,
  type RenderedTls,
  type Transport,
} from './transport.ts';

export const TOKEN_CACHE_DEFAULTS = {
  /** Tokens kept (service × tenant × credentials); past it the oldest is dropped: 10 000. */
  maxEntries: 10_000,
  /** Lifetime assumed when a token response has no usable `expires_in`: 5 min. */
  defaultLifetimeMs: 5 * MINUTE,
  /** A token is refreshed this long before it expires, at most: 60 s (and at most 10 % of its lifetime). */
  maxSkewMs: 60 * SECOND,
  /** Largest token response read: 64 KiB (a JWT with many claims is a few KiB). */
  maxResponseBytes: 64 * 1024,
  /** Longest lifetime believed, whatever `expires_in` says: 24 h (a huge value would cache a token forever). */
  maxLifetimeMs: 24 * 60 * MINUTE,
  /**
   * How long after its expiry a token is still scrubbed: 1 h. Then the scrubber forgets it, so a worker that
   * refreshes tokens for many tenants for weeks does not scrub every log line against every token it ever had.
   */
  scrubGraceMs: 60 * MINUTE,
} as const;

export interface TokenCacheOptions {
  /** Every access token obtained is handed to it, so it is scrubbed like a secret. */
  observer: SecretObserver;
  clock: Clock;
  /** Default TOKEN_CACHE_DEFAULTS.maxEntries. */
  maxEntries?: number;
  /** Default TOKEN_CACHE_DEFAULTS.defaultLifetimeMs. */
  defaultLifetimeMs?: number;
  /**
   * HTTPS_PROXY / HTTP_PROXY / NO_PROXY (issue 17): the token requests of a service without its own `proxy:` go
   * through the env's proxy. Default none.
   */
  proxyEnv?: ProxyEnv | undefined;
}

/** What one token is asked for: the service's oauth2 config with its credentials rendered for the job. */
export interface TokenGrant {
  service: string;
  tenant: string | undefined;
  auth: OAuth2Auth;
  clientId: string;
  clientSecret: string;
  /**
   * How the token request goes (tokenTransport of the service's rendered `proxy:` and `tls:`); default
   * DEFAULT_TRANSPORT, the environment's proxy. Part of the cache key: a token bound to a client certificate
   * (RFC 8705 §3) is not reused with a rotated one.
   */
  transport?: Transport;
}

export interface TokenFetchOptions {
  /** Time left in this caller's attempt: it waits at most this long for a token. */
  timeoutMs: number;
  /**
   * How long a token request this caller starts may take (default timeoutMs). Callers that join a request
   * already under way wait for it within their own timeoutMs; the request itself keeps its starter's bound,
   * so one caller with little time left does not fail every waiter.
   */
  fetchTimeoutMs?: number;
  /** Bound of a Retry-After the token endpoint sends with 429/503. */
  maxRetryAfterMs: number;
  /** Told when the token endpoint asked for a longer Retry-After than maxRetryAfterMs. */
  onRetryAfterClamped?: RetryAfterClampedListener | undefined;
  /** The worker pool's shutdown signal. */
  signal: AbortSignal | undefined;
}

export interface AccessToken {
  readonly value: string;
  /** Cache key, for `invalidate`. */
  readonly key: string;
  /** Taken from the cache rather than fetched for this call: a 401 with it may mean it was revoked early. */
  readonly fromCache: boolean;
}

interface Entry {
  token: string;
  refreshAtMs: number;
}

/** Renders a service's client credentials for a job (its tenant's secrets) into a grant. */
export function renderGrant(service: string, auth: OAuth2Auth, context: TemplateContext): TokenGrant {
  return {
    service,
    tenant: context.tenant,
    auth,
    clientId: String(auth.clientId.render(context)),
    clientSecret: String(auth.clientSecret.render(context)),
  };
}

/**
 * The transport of a service's token request, from the transport its calls use (renderTransport): the same
 * proxy setting and client certificate (`cert`, `key`, `passphrase`) and `minVersion`. `ca` and `servername`
 * are the baseUrl server's: kept as they are when the token endpoint is on the baseUrl's host; for another
 * host `servername` is dropped (the endpoint is checked against its own name) and `ca` is extended with Node's
 * bundled roots (an identity provider with a public certificate still verifies, one under the service's CA
 * too). `baseOrigin` is the call's rendered origin.
 */
export function tokenTransport(transport: Transport, tokenUrl: string, baseOrigin: string): Transport {
  const tls = transport.tls;
  if (tls === undefined || (tls.ca === undefined && tls.servername === undefined)) return transport;
  if (hostOf(tokenUrl) === hostOf(baseOrigin)) return transport;
  const { servername: _baseName, ca, ...rest } = tls;
  const rendered: RenderedTls =
    ca === undefined ? rest : { ...rest, ca: `${ca}\n${rootCertificates.join('\n')}` };
  return { key: `${transport.key}~token`, proxy: transport.proxy, tls: rendered };
}

function hostOf(url: string): string | undefined {
  try {
    return new URL(url).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

/**
 * Keyed by service, tenant and a digest of the credentials (and of the transport, when it is not the default):
 * tenants never share a token, and a rotated client secret or client certificate gets a new one at once
 * instead of the old one's token.
 */
export function tokenKey(grant: TokenGrant): string {
  const transportKey = grant.transport?.key ?? '';
  const digest = createHash('sha256')
    .update(
      JSON.stringify(
        transportKey === ''
          ? [grant.clientId, grant.clientSecret]
          : [grant.clientId, grant.clientSecret, transportKey],
      ),
    )
    .digest('base64url')
    .slice(0, 22);
  return JSON.stringify([grant.service, grant.tenant ?? null, digest]);
}

/**
 * How long a token is kept: until `min(60 s, 10 % of its lifetime)` before it expires, so a call never
 * leaves with a token about to expire in flight, and a short-lived token (tests, some gateways) is still
 * used for most of its life.
 */
export function refreshAfterMs(lifetimeMs: number): number {
  return lifetimeMs - Math.min(TOKEN_CACHE_DEFAULTS.maxSkewMs, lifetimeMs / 10);
}

export class TokenCache {
  readonly #observer: SecretObserver;
  readonly #clock: Clock;
  readonly #maxEntries: number;
  readonly #defaultLifetimeMs: number;
  /** Insertion order is age order: the first entry is the one dropped when the cache is full. */
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #proxyEnv: ProxyEnv | undefined;
  /**
   * Created on the first fetch (a pool without an oauth2 service never opens it): one pool per token endpoint
   * and transport, direct or tunnelled (the target checked before each CONNECT), as the services' calls.
   */
  #pools: PoolSet | undefined;
  #closed = false;

  constructor(options: TokenCacheOptions) {
    this.#observer = options.observer;
    this.#clock = options.clock;
    this.#proxyEnv = options.proxyEnv;
    this.#maxEntries = options.maxEntries ?? TOKEN_CACHE_DEFAULTS.maxEntries;
    this.#defaultLifetimeMs = options.defaultLifetimeMs ?? TOKEN_CACHE_DEFAULTS.defaultLifetimeMs;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * A valid token for the grant: the cached one (synchronously), or the one being fetched for the same key
   * (single-flight: concurrent callers share one request to the token endpoint), or a new fetch. Rejects
   * with a classified FerryError whose message starts `token endpoint:`.
   */
  get(grant: TokenGrant, options: TokenFetchOptions): AccessToken | Promise<AccessToken> {
    const key = tokenKey(grant);
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      if (this.#clock.now() < entry.refreshAtMs) return { value: entry.token, key, fromCache: true };
      this.#entries.delete(key);
    }
    let pending = this.#inflight.get(key);
    if (pending === undefined) {
      const fetching = this.#fetch(key, grant, options);
      pending = fetching;
      this.#inflight.set(key, fetching);
      const forget = (): void => {
        if (this.#inflight.get(key) === fetching) this.#inflight.delete(key);
      };
      fetching.then(forget, forget);
    }
    // Each waiter gets an error of its own: the processor scrubs and stores it per job.
    return withinTimeout(pending, options.timeoutMs).then(
      (value) => ({ value, key, fromCache: false }),
      (error: unknown) => {
        throw copyError(error);
      },
    );
  }

  /**
   * Drops `token` if it is still the cached one for `key`. After a token was rejected, the first caller
   * drops it and later callers with the same stale token leave the new one alone: 50 concurrent 401s cause
   * one refresh, not 50.
   */
  invalidate(key: string, token: string): void {
    if (this.#entries.get(key)?.token === token) this.#entries.delete(key);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#entries.clear();
    const pools = this.#pools;
    this.#pools = undefined;
    await pools?.close();
  }

  async #fetch(key: string, grant: TokenGrant, options: TokenFetchOptions): Promise<string> {
    if (this.#closed) throw tokenError(classifyError(new AttemptAbortedError('shutdown')));
    // Lifetimes count from when the request left, not from when the answer came back.
    const sentAtMs = this.#clock.now();
    const transport = grant.transport ?? DEFAULT_TRANSPORT;
    // Proxy credentials and key lines are scrubbed (the service's own pool may not exist yet).
    if (transport !== DEFAULT_TRANSPORT) observeTransport(transport, this.#observer);
    // Link-local and metadata addresses are refused at dial time here too (egress.ts).
    this.#pools ??= new PoolSet({ connections: 4, egress: TOKEN_ENDPOINT_SCOPE, proxyEnv: this.#proxyEnv });
    const response = await postTokenRequest(
      this.#pools,
      transport,
      grant,
      { ...options, timeoutMs: options.fetchTimeoutMs ?? options.timeoutMs },
      this.#clock,
    );
    const { token, lifetimeMs } = parseTokenResponse(response, grant, this.#defaultLifetimeMs);
    this.#observer.add(token, sentAtMs + lifetimeMs + TOKEN_CACHE_DEFAULTS.scrubGraceMs);
    const refreshAtMs = sentAtMs + refreshAfterMs(lifetimeMs);
    if (!this.#closed && refreshAtMs > this.#clock.now()) this.#store(key, { token, refreshAtMs });
    return token;
  }

  #store(key: string, entry: Entry): void {
    this.#entries.delete(key);
    if (this.#entries.size >= this.#maxEntries) {
      const now = this.#clock.now();
      for (const [old, { refreshAtMs }] of this.#entries) if (refreshAtMs <= now) this.#entries.delete(old);
      while (this.#entries.size >= this.#maxEntries) {
        const oldest = this.#entries.keys().next();
        if (oldest.done === true) break;
        this.#entries.delete(oldest.value);
      }
    }
    this.#entries.set(key, entry);
  }
}

interface TokenResponse {
  status: number;
  headers: IncomingHttpHeaders;
  raw: Buffer;
}

/** POSTs the form (RFC 6749 §4.4.2) with the client authenticated as configured (§2.3.1). */
async function postTokenRequest(
  pools: PoolSet,
  transport: Transport,
  grant: TokenGrant,
  options: TokenFetchOptions,
  clock: Clock,
): Promise<TokenResponse> {
  const { auth } = grant;
  const url = new URL(auth.tokenUrl);
  const form = new URLSearchParams({ grant_type: 'client_credentials' });
  if (auth.scope !== undefined) form.set('scope', auth.scope);
  if (auth.audience !== undefined) form.set('audience', auth.audience);
  for (const [name, value] of auth.params) form.set(name, value);
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
    'user-agent': 'ferry/0.1',
  };
  if (auth.clientAuth === 'basic') {
    // §2.3.1: each part is form-urlencoded before it is joined and base64-encoded.
    const credentials = `${formEncode(grant.clientId)}:${formEncode(grant.clientSecret)}`;
    headers['authorization'] = `Basic ${Buffer.from(credentials).toString('base64')}`;
  } else {
    form.set('client_id', grant.clientId);
    form.set('client_secret', grant.clientSecret);
  }

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new AttemptAbortedError('timeout')), options.timeoutMs);
  const outer = options.signal;
  const follow = (): void => controller.abort(new AttemptAbortedError('shutdown'));
  if (outer?.aborted === true) follow();
  else outer?.addEventListener('abort', follow, { once: true });
  try {
    checkOriginHost(TOKEN_ENDPOINT_SCOPE, url.origin);
    // Inside the try: TLS material that is not usable PEM is a ConfigurationError like any token failure.
    const dispatcher: Dispatcher = pools.get(url.origin, transport);
    const response = await dispatcher.request({
      origin: url.origin,
      path: url.pathname + url.search,
      method: 'POST',
      headers,
      body: form.toString(),
      signal: controller.signal,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
    const ok = response.statusCode >= 200 && response.statusCode < 300;
    const raw = await readCapped(
      response.body,
      ok ? TOKEN_CACHE_DEFAULTS.maxResponseBytes : ERROR_BODY_MAX_BYTES,
    );
    if (raw === undefined && ok) {
      throw new ResponseTooLargeError(
        `token endpoint: response exceeded the ${TOKEN_CACHE_DEFAULTS.maxResponseBytes}-byte cap`,
        { status: response.statusCode },
      );
    }
    const result = { status: response.statusCode, headers: response.headers, raw: raw ?? Buffer.alloc(0) };
    if (!ok) throw classifyTokenFailure(result, grant, options, clock);
    return result;
  } catch (error) {
    if (isFerryError(error)) throw error;
    // After an abort undici reports the abort's reason, or whatever broke when the socket went: the reason says why.
    const reason: unknown = controller.signal.aborted ? controller.signal.reason : error;
    if (reason instanceof AttemptAbortedError && reason.reason === 'timeout')
      throw new TimeoutError(`token endpoint: timed out after ${options.timeoutMs} ms`, { cause: reason });
    throw tokenError(classifyTlsError(reason) ?? classifyError(reason));
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', follow);
  }
}

/** The body up to `maxBytes`; undefined (and the rest discarded) when it is longer. */
async function readCapped(
  body: Dispatcher.ResponseData['body'],
  maxBytes: number,
): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      body.destroy();
      return undefined;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/**
 * A failed token request, by its status and the OAuth error code of its body (RFC 6749 §5.2):
 *
 * | status / `error`                                               | class               | why                                         |
 * | -------------------------------------------------------------- | ------------------- | ------------------------------------------- |
 * | 401, 403                                                       | AuthenticationError | the credentials were refused                |
 * | `invalid_client`, `unauthorized_client`, `invalid_grant`       | AuthenticationError | the client (its id, secret or grant) is bad |
 * | `invalid_scope`                                                | AuthenticationError | the client is not granted the scope         |
 * | `server_error`, `temporarily_unavailable` (with any 4xx)       | ServerError         | the server says it will recover             |
 * | `invalid_request`, `unsupported_grant_type`, other 4xx         | ClientError         | the request (our config) is wrong           |
 * | 429                                                            | RateLimitedError    | with its Retry-After                        |
 * | 5xx                                                            | ServerError         | with its Retry-After on 503                 |
 *
 * The message names the token endpoint, the status and the OAuth code and description, never the body.
 */
function classifyTokenFailure(
  response: TokenResponse,
  grant: TokenGrant,
  options: TokenFetchOptions,
  clock: Clock,
): FerryError {
  const { status } = response;
  const oauth = readOAuthError(response, grant);
  const detail =
    oauth === undefined
      ? ''
      : ` (${oauth.description === undefined ? oauth.code : `${oauth.code}: ${oauth.description}`})`;
  const message = `token endpoint: ${status}${detail}`;
  const retryAfter =
    status === 429 || status === 503
      ? readRetryAfter(response.headers['retry-after'], clock.now(), options.maxRetryAfterMs)
      : undefined;
  if (retryAfter !== undefined && retryAfter.askedMs > retryAfter.delayMs)
    options.onRetryAfterClamped?.(retryAfter.askedMs, retryAfter.delayMs);
  const retryAfterMs = retryAfter?.delayMs;
  const errorOptions: FerryErrorOptions = { status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
  if (status === 401 || status === 403 || (oauth !== undefined && AUTH_CODES.has(oauth.code)))
    return new AuthenticationError(message, errorOptions);
  if (status < 500 && status !== 429 && oauth !== undefined && SERVER_CODES.has(oauth.code))
    return new ServerError(message, errorOptions);
  const error = classifyStatus(status, retryAfterMs);
  error.message = status >= 300 && status < 400 ? `${message} (redirects are not followed)` : message;
  return error;
}

const AUTH_CODES: ReadonlySet<string> = new Set([
  'invalid_client',
  'unauthorized_client',
  'invalid_grant',
  'invalid_scope',
]);
const SERVER_CODES: ReadonlySet<string> = new Set(['server_error', 'temporarily_unavailable']);
/** RFC 6749 §5.2: `error` and `error_description` are limited to these characters. */
const OAUTH_ERROR_CODE = /^[\x20\x21\x23-\x5B\x5D-\x7E]{1,64}$/;
const MAX_DESCRIPTION_CHARS = 200;

/** The OAuth `error` and a sanitized `error_description` of an error body, when it has them. */
function readOAuthError(
  response: TokenResponse,
  grant: TokenGrant,
): { code: string; description: string | undefined } | undefined {
  const fields = parseFields(response);
  const code = fields?.['error'];
  if (typeof code !== 'string' || !OAUTH_ERROR_CODE.test(code)) return undefined;
  const raw = fields?.['error_description'];
  let description: string | undefined;
  if (typeof raw === 'string') {
    // An endpoint that echoes the request must not put the client secret into a message, scrubber or not.
    description = withoutSecret(raw, grant.clientSecret)
      .replace(/[^\x20-\x7E]+/g, ' ')
      .trim();
    if (description.length > MAX_DESCRIPTION_CHARS)
      description = `${description.slice(0, MAX_DESCRIPTION_CHARS)}…`;
    if (description === '') description = undefined;
  }
  return { code, description };
}

/**
 * `text` without the client secret in any of its wire forms (the processor's scrubber runs on the message
 * too, but only after this description was cut and its control characters replaced, too late for a value the
 * cut or the replacement altered). A rare path: one regex compiled per failed token request.
 */
function withoutSecret(text: string, secret: string): string {
  const scrubber = new Scrubber();
  scrubber.add(secret);
  return scrubber.scrub(text);
}

/**
 * The token (RFC 6749 §5.1) and how long it lives. A 2xx that is not a usable bearer token is a ServerError
 * (the endpoint is broken, and may be fixed), except a token type Ferry cannot use, which no retry changes.
 */
function parseTokenResponse(
  response: TokenResponse,
  grant: TokenGrant,
  defaultLifetimeMs: number,
): { token: string; lifetimeMs: number } {
  const fields = parseFields(response);
  if (fields === undefined)
    throw new ServerError(`token endpoint: ${response.status} answer is not a JSON object`);
  const token = fields['access_token'];
  if (typeof token !== 'string' || token === '') {
    const oauth = readOAuthError(response, grant);
    const message = `token endpoint: ${response.status} answer has no access_token${oauth === undefined ? '' : ` (${oauth.code})`}`;
    throw oauth !== undefined && AUTH_CODES.has(oauth.code)
      ? new AuthenticationError(message)
      : new ServerError(message);
  }
  // Visible ASCII only: it goes into a header (RFC 6750 §2.1 b64token is narrower still).
  if (!/^[\x21-\x7E]+$/.test(token))
    throw new ServerError('token endpoint: access_token has characters a header cannot carry');
  const type = fields['token_type'];
  if (type !== undefined && (typeof type !== 'string' || type.toLowerCase() !== 'bearer')) {
    const shown = typeof type === 'string' && /^[A-Za-z0-9_-]{1,32}$/.test(type) ? ` "${type}"` : '';
    throw new ConfigurationError(`token endpoint: token_type${shown} is not supported (only bearer)`);
  }
  const expiresIn = fields['expires_in'];
  const seconds =
    typeof expiresIn === 'number' ? expiresIn : typeof expiresIn === 'string' ? Number(expiresIn) : NaN;
  const lifetimeMs =
    Number.isFinite(seconds) && seconds > 0
      ? Math.min(seconds * SECOND, TOKEN_CACHE_DEFAULTS.maxLifetimeMs)
      : defaultLifetimeMs;
  return { token, lifetimeMs };
}

/**
 * The response's fields: JSON (§5.1), or a form-encoded body, which some older endpoints send. Undefined
 * when it is neither an object nor a form. Never throws; a `__proto__` key stays an own key.
 */
function parseFields(response: TokenResponse): Record<string, unknown> | undefined {
  const text = response.raw.toString('utf8');
  const type = response.headers['content-type'];
  const contentType = (Array.isArray(type) ? type[0] : type) ?? '';
  if (/^application\/x-www-form-urlencoded\b/i.test(contentType))
    return Object.fromEntries(new URLSearchParams(text));
  try {
    const parsed: unknown = JSON.parse(text);
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)
      ? (parsed as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** application/x-www-form-urlencoded, as the form body encodes it (space as `+`). */
function formEncode(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

/** A network error or abort, named as the token endpoint's. */
function tokenError(error: FerryError): FerryError {
  error.message = `token endpoint: ${error.message}`;
  return error;
}

/** The same error as a new instance (same class, message, status, Retry-After), caused by the shared one. */
/** `promise`, or a TimeoutError once `timeoutMs` passes (the promise itself goes on for its other waiters). */
function withinTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new TimeoutError("token endpoint: no token within the attempt's time left")),
      Math.max(0, timeoutMs),
    );
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error as Error);
      },
    );
  });
}

function copyError(error: unknown): unknown {
  if (!isFerryError(error)) return error;
  const shared = error;
  const Class = shared.constructor as new (message: string, options: FerryErrorOptions) => FerryError;
  return new Class(shared.message, {
    ...(shared.status === undefined ? {} : { status: shared.status }),
    ...(shared.retryAfterMs === undefined ? {} : { retryAfterMs: shared.retryAfterMs }),
    cause: shared,
  });
}
