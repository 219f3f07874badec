/**
 * The loaded, validated, compiled and deep-frozen services file: what the worker and producer consume.
 * `load.ts` builds it from YAML; nothing downstream re-validates it.
 */

import type { EgressRules } from '../egress.ts';
import type { CompiledSigning } from './signing.ts';
import type { CompiledTls, ProxySetting } from './transport.ts';

/** Values a template can read. `secrets` are already resolved for the job's tenant. */
export interface TemplateContext {
  input: unknown;
  secrets: ReadonlyMap<string, string>;
  tenant: string | undefined;
  job: { id: string; idempotencyKey: string };
  /** onFailure templates only: the final error (message already scrubbed of secrets). */
  error?: { type: string; status: number | undefined; message: string };
  /** onFailure templates only: the dead letter's id. */
  deadLetter?: { id: string };
  /** `then` templates only: the completed call's result (headers: the allow-listed ones). */
  result?: { status: number; headers: Readonly<Record<string, string>>; body: unknown };
}

/**
 * `enqueue: { service, operation, input }` of a reaction (onFailure rule, `then`): the follow-up job. Checked at
 * load: the service and operation exist. `input` is a template (mode `value`) over the roots its place allows.
 */
export interface CompiledEnqueue {
  readonly service: string;
  readonly operation: string;
  /** undefined: the follow-up has no input. */
  readonly input: CompiledTemplate | undefined;
  /**
   * `maxDepth: N`: the follow-up is enqueued only while its chain depth (`origin.depth`, the source's + 1) is at
   * most N (and at most the runtime's chain-depth limit). Required on at least one enqueue of every cycle of
   * onFailure, then and fallback edges. Undefined: only the runtime limit applies.
   */
  readonly maxDepth?: number | undefined;
}

/** One `onFailure` rule. `when` undefined matches any error; otherwise every list given must match. */
export interface FailureRule {
  readonly when:
    | {
        /** undefined: any type. */
        readonly errorTypes: readonly string[] | undefined;
        /** undefined: any status (and none). */
        readonly statuses: readonly number[] | undefined;
      }
    | undefined;
  readonly enqueue: CompiledEnqueue;
}

/** A top-level `schedules:` entry: a BullMQ job scheduler kept equal to the file by the workers. */
export interface ScheduleConfig {
  readonly name: string;
  readonly service: string;
  readonly operation: string;
  /** Static JSON (no templates), the input of every run. */
  readonly input: unknown;
  readonly tenant: string | undefined;
  readonly repeat:
    | { readonly kind: 'cron'; readonly cron: string; readonly tz: string | undefined }
    | { readonly kind: 'every'; readonly everyMs: number };
}

/** A `{{ … }}` template compiled once at load. */
export interface CompiledTemplate {
  /** The template as written in the services file (for messages; never contains secret values). */
  readonly source: string;
  /** Secret names it reads (`{{ secrets.x }}`), so the worker resolves only these. */
  readonly secretNames: readonly string[];
  readonly usesInput: boolean;
  /**
   * Renders it. A value that is a single placeholder keeps its JSON type (mode `value`); otherwise the result
   * is a string. Mode `path` percent-encodes every placeholder's value; mode `header` refuses CR/LF.
   * Throws ValidationError (missing input field, CR/LF) or ConfigurationError (unknown secret).
   */
  render(context: TemplateContext): unknown;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD';

export interface CompiledOperation {
  readonly name: string;
  readonly method: HttpMethod;
  /** Path template (mode `path`), appended to the service's baseUrl. */
  readonly path: CompiledTemplate;
  /** Query parameters (mode `value`, stringified). */
  readonly query: ReadonlyMap<string, CompiledTemplate>;
  /** Operation headers (mode `header`), merged over the service's headers. */
  readonly headers: ReadonlyMap<string, CompiledTemplate>;
  /** Body template (mode `value`); sent as JSON unless it renders to a string. */
  readonly body: CompiledTemplate | undefined;
  /** Per-operation overrides. */
  readonly timeoutMs: number;
  /**
   * The operation's own `onFailure` rules followed by its service's, in file order: the first match is used, and
   * its index in this list is part of the follow-up's idempotency key.
   */
  readonly onFailure: readonly FailureRule[];
  /** `then: { enqueue }`: the next step, enqueued once when a job of this operation completes. */
  readonly then: CompiledEnqueue | undefined;
  /** `signing:` (the operation's, else its service's): how each request is signed; undefined: unsigned. */
  readonly signing?: CompiledSigning | undefined;
  /**
   * `sensitive: true` (its own, else its service's): the job's input and metadata are sealed before they reach
   * Redis and opened only by the worker at call time (core/sealed-data.ts). Absent means false.
   */
  readonly sensitive?: boolean;
}

export type AuthConfig =
  | { readonly type: 'none' }
  | { readonly type: 'bearer'; readonly token: CompiledTemplate }
  | { readonly type: 'basic'; readonly username: CompiledTemplate; readonly password: CompiledTemplate }
  | {
      readonly type: 'apiKey';
      /** Exactly one of header or query is set. */
      readonly header: string | undefined;
      readonly query: string | undefined;
      readonly value: CompiledTemplate;
    }
  | OAuth2Auth;

/** Client-credentials grant (RFC 6749 §4.4); the worker caches the token (src/worker/http/oauth2.ts). */
export interface OAuth2Auth {
  readonly type: 'oauth2';
  /** Static http(s) URL of the token endpoint. */
  readonly tokenUrl: string;
  /** Templates (mode `value`) that may read secrets and the tenant, never input. */
  readonly clientId: CompiledTemplate;
  readonly clientSecret: CompiledTemplate;
  readonly scope: string | undefined;
  readonly audience: string | undefined;
  /** Extra form fields of the token request, sent as written. Default none. */
  readonly params: ReadonlyMap<string, string>;
  /**
   * How client_id and client_secret reach the token endpoint (RFC 6749 §2.3.1): `basic`, an HTTP Basic
   * Authorization header (every server must support it; the default), or `body`, form fields.
   */
  readonly clientAuth: 'basic' | 'body';
}

export interface RetryPolicy {
  /** Ferry attempts before the job is dead-lettered (>= 1). */
  readonly attempts: number;
  /** Base of the exponential backoff: attempt n waits up to delayMs * 2^(n-1), with full jitter. */
  readonly delayMs: number;
  /** Cap of any one backoff wait. */
  readonly maxDelayMs: number;
  /** Extra status codes to treat as retryable (beyond 408, 425, 429, 5xx). */
  readonly retryOn: readonly number[];
  /** Upper bound of a Retry-After wait (longer ones are clamped). */
  readonly maxRetryAfterMs: number;
  /** Time a job may spend held (breaker open, 429/503) before holds start using attempts. */
  readonly maxHoldMs: number;
}

export interface BreakerPolicy {
  /** Failure percentage in the rolling window that opens the breaker. */
  readonly errorThresholdPercentage: number;
  /** Calls in the rolling window before the percentage is considered. */
  readonly volumeThreshold: number;
  readonly rollingWindowMs: number;
  /** How long the breaker stays open before one probe call decides. */
  readonly resetTimeoutMs: number;
}

export interface ServiceConfig {
  readonly name: string;
  /** baseUrl template: may read secrets, never input (producers never choose where a call goes). */
  readonly baseUrl: CompiledTemplate;
  /** Whole attempt: connect + headers + body. */
  readonly timeoutMs: number;
  /** In-flight calls per worker process. */
  readonly concurrency: number;
  /**
   * `tenantConcurrency`: at most this many calls in flight per tenant across all workers (jobs without a tenant
   * share one bucket, NO_TENANT); undefined = no limit, and no lease is taken.
   */
  readonly tenantConcurrency?: number | undefined;
  /** Across all workers; undefined = unlimited. */
  readonly rateLimit: { readonly max: number; readonly perMs: number } | undefined;
  readonly auth: AuthConfig;
  readonly headers: ReadonlyMap<string, CompiledTemplate>;
  readonly retry: RetryPolicy;
  readonly breaker: BreakerPolicy;
  readonly maxResponseBytes: number;
  /** Largest accepted job input (JSON bytes). */
  readonly maxInputBytes: number;
  /**
   * For a job with tenant T, `{{ secrets.x }}` reads `tenant/T/x` first. `fallback`: then the global `x`.
   * `required`: only `tenant/T/x` (a missing one is a ConfigurationError, never a silent fall-back to the
   * global value), and a job without a tenant is refused (ValidationError).
   */
  readonly tenantSecrets: 'fallback' | 'required';
  /** `egress:` allowances (default none): private ranges a non-literal host may reach. */
  readonly egress: EgressRules;
  /**
   * The origin (scheme, host and port) baseUrl writes literally in the services file: no placeholder before
   * its path and no FERRY_SERVICE_<NAME>_URL override. Calls to it may reach private and loopback addresses
   * (never link-local or metadata ones). Undefined when a secret, the tenant or the env chooses the origin.
   */
  readonly literalOrigin: string | undefined;
  /** Where the baseUrl came from: the services file, or FERRY_SERVICE_<NAME>_URL (named in refusals). */
  readonly baseUrlFrom: 'file' | 'env';
  readonly operations: ReadonlyMap<string, CompiledOperation>;
  /** Every secret name any template of this service reads (resolved per job, only these). */
  readonly secretNames: readonly string[];
  /** `fallback: { service }`: where a job goes while this service's breaker is open (same operation names). */
  readonly fallback: string | undefined;
  /** `proxy:` (issue 17): the env's proxy (default), none, or a URL template. Undefined: as `env`. */
  readonly proxy?: ProxySetting | undefined;
  /** `tls:` (issue 17): CA, client certificate and TLS limits of its connections; undefined: Node's defaults. */
  readonly tls?: CompiledTls | undefined;
}

export interface ServicesConfig {
  readonly services: ReadonlyMap<string, ServiceConfig>;
  /** Top-level `schedules:`, by name. */
  readonly schedules: ReadonlyMap<string, ScheduleConfig>;
  /** The file it was loaded from, when it came from a file. */
  readonly source: string | undefined;
}
