/**
 * One attempt of one job: validate → resolve secrets → render → token (oauth2) → breaker → call → classify.
 * Returns an Outcome and never throws; it knows nothing of BullMQ (delivery.ts applies the outcome to the queue).
 */
import { type BreakerOpenError, isBreakerOpenError, type ServiceBreaker } from '../breakers/index.ts';
import { MIN_HOLD_MS } from '../core/delivery-policy.ts';
import {
  CircuitOpenError,
  EgressDeniedError,
  type FerryError,
  isFerryError,
  TimeoutError,
  ValidationError,
} from '../core/errors.ts';
import {
  issuePath,
  isTriviallyValidJobData,
  type JobData,
  jobDataSchema,
  type JobResult,
} from '../core/job.ts';
import { defaultIdempotencyKey } from '../core/queue-layout.ts';
import type { Keyring } from '../core/sealed-data.ts';
import type { OAuth2Auth, ServiceConfig, TemplateContext } from '../core/services/types.ts';
import type { Clock } from '../core/time.ts';
import { resolveSecrets, type SecretResolver } from '../secrets/resolver.ts';
import type { Scrubber } from '../secrets/scrub.ts';
import { authorizeBearer } from './http/auth.ts';
import type { CallResponse } from './http/call.ts';
import { classifyError, isUnhealthyFailure } from './http/classify.ts';
import {
  type AccessToken,
  renderGrant,
  type TokenCache,
  type TokenGrant,
  tokenTransport,
} from './http/oauth2.ts';
import type { PoolSet } from './http/pools.ts';
import { buildRequest, type OutboundRequest } from './http/request.ts';
import { allowListedHeaders, parseBody } from './http/response.ts';
import { signRequest } from './http/signing.ts';
import { renderTransport, type Transport } from './http/transport.ts';
import type { RetryAfterClampedListener } from './retry-after.ts';
import { openSealedJob, sealedValueScrubber } from './sealed.ts';
import { takeTenantLease, type TenantLease, TenantLeaseError, type TenantLeases } from './tenant-leases.ts';
import {
  type AttemptTrace,
  endAttemptTrace,
  startAttemptTrace,
  tracedCall,
  type TraceIds,
} from './tracing.ts';

export type AttemptOutcome =
  | { kind: 'completed'; result: Omit<JobResult, 'attempts'>; durationMs: number }
  /**
   * The call (or its preparation) failed; the delivery policy (core/delivery-policy.ts) decides between retry,
   * hold (a 429/503 with Retry-After) and dead letter.
   */
  | { kind: 'failed'; error: FerryError; durationMs: number }
  /** The whole service must wait, no call made: the breaker is open. */
  | { kind: 'held'; error: FerryError; holdMs: number; durationMs: number }
  /** The worker is shutting down and abandoned the call: not the job's fault, uses no attempt. */
  | { kind: 'interrupted'; durationMs: number }
  /** Not run, no call made: the job's tenant has `tenantConcurrency` calls in flight (tenant-leases.ts). */
  | { kind: 'deferred'; reason: 'tenantConcurrency'; durationMs: number };

export interface AttemptJob {
  id: string;
  /** BullMQ job name = operation. */
  name: string;
  data: JobData;
  /** When the job was created (BullMQ `job.timestamp`), epoch ms: part of its default idempotency key. */
  createdAt?: number;
  /** The attempt's number (1 for the first): an attribute of its span. */
  attempt?: number;
  /** Set by runAttempt when the attempt's span records: the ids its log line carries. */
  trace?: TraceIds | undefined;
}

export interface ProcessorDeps {
  service: ServiceConfig;
  breaker: ServiceBreaker | undefined;
  secrets: SecretResolver;
  scrubber: Scrubber;
  pools: PoolSet;
  /** OAuth2 client-credentials tokens, one cache per worker pool. */
  tokens: TokenCache;
  clock: Clock;
  /** Told when a downstream (or its token endpoint) asked for more than `retry.maxRetryAfterMs`. */
  onRetryAfterClamped?: RetryAfterClampedListener | undefined;
  /** The service's tenant leases, when it sets `tenantConcurrency` (absent: no lease, no Redis call). */
  tenantLeases?: TenantLeases | undefined;
  /** FERRY_SECRETS_KEY's keyring: opens sealed jobs (sensitive operations). */
  keyring?: Keyring | undefined;
}

/**
 * Never rejects, but for one case: the tenant lease (tenantConcurrency) could not be taken because Redis failed;
 * that is Ferry's own failure, not the job's, and the caller handles it as one (delivery.ts: internal error).
 */
export async function runAttempt(
  job: AttemptJob,
  deps: ProcessorDeps,
  signal: AbortSignal | undefined,
): Promise<AttemptOutcome> {
  const startedAt = deps.clock.now();
  const elapsed = (): number => deps.clock.now() - startedAt;
  let lease: TenantLease | undefined;
  let traced: AttemptTrace | undefined;
  /** A sealed job's plaintext values, kept out of what the downstream answers (stored, logged). */
  let sealedValues: Scrubber | undefined;
  /** The job data as stored, once it parsed: an attempt refused before its span starts still gets one. */
  let stored: JobData | undefined;
  try {
    const { service } = deps;
    const operation = service.operations.get(job.name);
    if (operation === undefined) {
      throw new ValidationError(`unknown operation "${job.name}" for service "${service.name}"`, {
        field: 'operation',
      });
    }
    stored = isTriviallyValidJobData(job.data) ? job.data : parseJobData(job.data);
    if (service.tenantSecrets === 'required' && stored.tenant === undefined) {
      // A raw producer's job (the API and Producer refuse it at enqueue): without a tenant it would read the
      // global values, the very fall-back the service refuses.
      throw new ValidationError(`tenant: required by service "${service.name}" (tenantSecrets: required)`, {
        field: 'tenant',
      });
    }
    // Step 2 (sealed): the plaintext input and metadata, in memory only, used from here on.
    const data: JobData =
      stored.sealed === undefined ? stored : openSealedJob(service, deps.keyring, stored, operation.name);
    if (data !== stored) sealedValues = sealedValueScrubber(data);
    if (deps.tenantLeases !== undefined) {
      lease = await takeTenantLease(deps.tenantLeases, data.tenant, job.id, operation.timeoutMs);
      if (lease === undefined)
        return { kind: 'deferred', reason: 'tenantConcurrency', durationMs: elapsed() };
    }
    traced = startAttemptTrace(
      job,
      service,
      operation.name,
      data.metadata,
      deps.scrubber,
      sealedValues !== undefined,
    );
    const resolved = resolveSecrets(
      deps.secrets,
      service.secretNames,
      data.tenant,
      deps.scrubber,
      service.tenantSecrets,
    );
    const secrets = resolved instanceof Promise ? await resolved : resolved;
    if (data.tenant !== undefined && service.tenantSecrets === 'fallback') {
      const scoped = checkTenantHostScope(service, data.tenant, deps.secrets);
      if (scoped !== undefined) await scoped;
    }
    const context: TemplateContext = {
      input: data.input,
      secrets,
      tenant: data.tenant,
      job: {
        id: job.id,
        idempotencyKey:
          data.idempotencyKey ??
          defaultIdempotencyKey(service.name, job.id, job.createdAt ?? 0, data.enqueueId),
      },
    };
    const request = buildRequest(service, operation, context);
    if (operation.signing !== undefined) signRequest(operation.signing, request, context, deps.clock.now());

    // `proxy:` and `tls:` (issue 17), rendered with this job's secrets: a rotated key reaches the next call.
    const transport = renderTransport(service, context);
    let response: CallResponse;
    if (service.auth.type === 'oauth2') {
      response = await callWithToken(
        service.auth,
        request,
        context,
        transport,
        deps,
        signal,
        startedAt + operation.timeoutMs,
        traced,
      );
    } else {
      const call = (): Promise<CallResponse> =>
        tracedCall(traced, deps.pools, request, {
          timeoutMs: operation.timeoutMs,
          maxResponseBytes: service.maxResponseBytes,
          maxRetryAfterMs: service.retry.maxRetryAfterMs,
          onRetryAfterClamped: deps.onRetryAfterClamped,
          signal,
          now: deps.clock.now,
          scrubber: deps.scrubber,
          transport,
        });
      response = await throughBreaker(call, deps, signal);
    }
    // Scrubbed by parseBody, before a body over the cap is cut.
    const { body, truncated } = parseBody(
      response.raw,
      headerString(response.headers['content-type']),
      deps.scrubber,
    );
    const result: Omit<JobResult, 'attempts'> = {
      status: response.status,
      // A Location or request-id header can echo a query-string API key back.
      headers: deps.scrubber.scrubValue(allowListedHeaders(response.headers)),
      body,
      durationMs: elapsed(),
    };
    if (truncated) result.bodyTruncated = true;
    if (sealedValues !== undefined) {
      result.body = sealedValues.scrubValue(result.body);
      result.headers = sealedValues.scrubValue(result.headers);
    }
    // A sealed job's metadata stays sealed: never copied into its result (stored in plaintext).
    if (stored.metadata !== undefined) result.metadata = stored.metadata;
    return endAttemptTrace(traced, { kind: 'completed', result, durationMs: result.durationMs });
  } catch (thrown) {
    if (thrown instanceof TenantLeaseError) throw thrown;
    // Refused before its span started (bad data, a tenant missing, an envelope that does not open): the span
    // of this attempt still, a child of the job's stored trace context unless that is sealed.
    const unopened = stored?.sealed !== undefined;
    traced ??= startAttemptTrace(
      job,
      deps.service,
      job.name,
      unopened ? undefined : stored?.metadata,
      deps.scrubber,
      unopened,
    );
    const durationMs = elapsed();
    if (signal?.aborted === true) return endAttemptTrace(traced, { kind: 'interrupted', durationMs });
    if (isBreakerOpenError(thrown)) return endAttemptTrace(traced, breakerHold(thrown, durationMs));
    const error = isFerryError(thrown) ? thrown : classifyError(thrown);
    error.message = deps.scrubber.scrub(error.message);
    if (sealedValues !== undefined) error.message = sealedValues.scrub(error.message);
    return endAttemptTrace(traced, { kind: 'failed', error, durationMs });
  } finally {
    if (lease !== undefined) await lease.release();
  }
}

/** Per service: the secrets it reads outside its baseUrl (auth, headers, query, body), computed once. */
const sentSecretNames = new WeakMap<ServiceConfig, readonly string[]>();

/**
 * Under `tenantSecrets: fallback`, a tenant whose own secret chose the baseUrl's host would otherwise get the
 * GLOBAL token, password or header secret sent there: one tenant could collect the operator's credentials
 * (issue 13). So when any baseUrl secret resolves from the tenant's scope, every other secret the call sends
 * must resolve from that scope too, or the call is refused (EgressDeniedError) before anything is sent.
 * Only services whose baseUrl reads a secret pay for the extra lookups.
 */
function checkTenantHostScope(
  service: ServiceConfig,
  tenant: string,
  resolver: SecretResolver,
): Promise<void> | undefined {
  const hostNames = service.baseUrl.secretNames;
  if (hostNames.length === 0) return undefined;
  let sent = sentSecretNames.get(service);
  if (sent === undefined) {
    sent = service.secretNames.filter((name) => !hostNames.includes(name));
    sentSecretNames.set(service, sent);
  }
  if (sent.length === 0) return undefined;
  const names = sent;
  return (async () => {
    let chooser: string | undefined;
    for (const name of hostNames) {
      if ((await resolver.resolve(name, tenant, true)) !== undefined) {
        chooser = name;
        break;
      }
    }
    if (chooser === undefined) return;
    for (const name of names) {
      if ((await resolver.resolve(name, tenant, true)) === undefined) {
        throw new EgressDeniedError(
          `secret "${name}" has no value of tenant "${tenant}", and its global value may not go to the ` +
            `host tenant "${tenant}"'s own secret "${chooser}" chose (baseUrl of service "${service.name}"); ` +
            `set tenant/${tenant}/${name}, or use tenantSecrets: required`,
          { field: `secrets.${name}` },
        );
      }
    }
  })();
}

/** A call this worker aborted for shutdown says nothing about the service's health: never count it. */
function throughBreaker(
  call: () => Promise<CallResponse>,
  deps: ProcessorDeps,
  signal: AbortSignal | undefined,
): Promise<CallResponse> {
  return deps.breaker === undefined
    ? call()
    : deps.breaker.execute(call, (error) => isUnhealthyFailure(error) && signal?.aborted !== true);
}

/**
 * An oauth2 service's call: a token from the cache (fetched when missing; the token request is not a call to
 * the service, so it is outside the breaker), then the call with it. A 401 to a cached token may only mean the
 * token was revoked or expired early: drop it, fetch a fresh one and call again at once, in the same attempt
 * (DESIGN §2, §4: the refresh uses no attempt). A 401 to a fresh token is the credentials' fault and fails
 * the attempt (AuthenticationError, dead-lettered). Token request and calls share the attempt's deadline.
 */
async function callWithToken(
  auth: OAuth2Auth,
  request: OutboundRequest,
  context: TemplateContext,
  transport: Transport,
  deps: ProcessorDeps,
  signal: AbortSignal | undefined,
  deadlineMs: number,
  traced: AttemptTrace | undefined,
): Promise<CallResponse> {
  const { service } = deps;
  const remainingMs = (): number => {
    const left = deadlineMs - deps.clock.now();
    if (left <= 0) throw new TimeoutError('attempt exceeded its timeout');
    return left;
  };
  // The token request goes the way the calls go: the service's proxy and client certificate (oauth2.ts).
  const grant: TokenGrant = {
    ...renderGrant(service.name, auth, context),
    transport: tokenTransport(transport, auth.tokenUrl, request.origin),
  };
  const call = (token: AccessToken): Promise<CallResponse> => {
    // Measured before the breaker: an attempt the token request used up never reached the service.
    const timeoutMs = remainingMs();
    return throughBreaker(
      () =>
        tracedCall(traced, deps.pools, authorizeBearer(request, token.value), {
          timeoutMs,
          maxResponseBytes: service.maxResponseBytes,
          maxRetryAfterMs: service.retry.maxRetryAfterMs,
          onRetryAfterClamped: deps.onRetryAfterClamped,
          signal,
          now: deps.clock.now,
          scrubber: deps.scrubber,
          transport,
        }),
      deps,
      signal,
    );
  };
  const token = await fetchToken(grant, deps, signal, remainingMs());
  try {
    return await call(token);
  } catch (error) {
    if (!token.fromCache || !isFerryError(error) || error.status !== 401 || signal?.aborted === true)
      throw error;
  }
  deps.tokens.invalidate(token.key, token.value);
  const fresh = await fetchToken(grant, deps, signal, remainingMs());
  try {
    return await call(fresh);
  } catch (error) {
    if (isFerryError(error) && error.status === 401) error.message += ' (also after a token refresh)';
    throw error;
  }
}

function fetchToken(
  grant: TokenGrant,
  deps: ProcessorDeps,
  signal: AbortSignal | undefined,
  timeoutMs: number,
): AccessToken | Promise<AccessToken> {
  return deps.tokens.get(grant, {
    timeoutMs,
    // A request this attempt starts may serve other jobs too: bound it by a whole attempt, not by what is
    // left of this one.
    fetchTimeoutMs: Math.max(timeoutMs, deps.service.timeoutMs),
    maxRetryAfterMs: deps.service.retry.maxRetryAfterMs,
    onRetryAfterClamped: deps.onRetryAfterClamped,
    signal,
  });
}

/** Job data through the schema; a ValidationError naming the first bad field. */
function parseJobData(raw: unknown): JobData {
  const parsed = jobDataSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue === undefined ? 'data' : issuePath(issue.path, 'data');
    throw new ValidationError(`bad job data: ${field}: ${issue?.message ?? 'invalid'}`, { field });
  }
  return parsed.data;
}

function breakerHold(error: BreakerOpenError, durationMs: number): AttemptOutcome {
  const holdMs = Math.max(error.retryAfterMs, MIN_HOLD_MS);
  return {
    kind: 'held',
    error: new CircuitOpenError(`circuit breaker for "${error.breaker}" is open`, {
      retryAfterMs: holdMs,
      cause: error,
    }),
    holdMs,
    durationMs,
  };
}

function headerString(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
