/**
 * The services-file schema (DESIGN §2, docs/services-file.md): what may be written, with messages that state
 * the expectation (`must be an integer >= 1`). Templates are syntax-checked here, so every template problem
 * is reported together with every other issue; `load.ts` compiles them afterwards with their full location.
 */
import { z } from 'zod';

import { parseAllowEntry } from '../egress.ts';
import { ERROR_TYPES, type ErrorType, isErrorType } from '../errors.ts';
import { MINUTE, SECOND } from '../time.ts';
import {
  HEADER_FIELDS,
  MAX_SIGNING_KEYS,
  parseLayout,
  PAYLOAD_FIELDS,
  SIGNATURE_FIELDS,
  SIGNING_ALGORITHMS,
  SIGNING_ENCODINGS,
  SIGNING_KEY_FORMATS,
  SIGNING_SCHEMES,
  type SigningDocument,
  type SigningField,
  signingProblems,
} from './signing.ts';
import {
  compileTemplate,
  type TemplateAllowed,
  TemplateCompileError,
  type TemplateMode,
} from './templates.ts';
import { PROXY_NONE, TLS_MIN_VERSIONS } from './transport.ts';
import type { ServiceConfig } from './types.ts';

/** Options every service gets unless it (or `defaults:`) sets them. */
export type ServiceDefaults = Pick<
  ServiceConfig,
  'timeoutMs' | 'concurrency' | 'retry' | 'breaker' | 'maxResponseBytes' | 'maxInputBytes' | 'tenantSecrets'
>;

export const SERVICE_DEFAULTS = {
  /** Whole attempt (connect + headers + body): 10 s. */
  timeoutMs: 10 * SECOND,
  /** In-flight calls per worker process: 10. */
  concurrency: 10,
  retry: {
    /** Attempts before the job is dead-lettered: 8. */
    attempts: 8,
    /** Base of the exponential backoff (full jitter): 1 s. */
    delayMs: 1 * SECOND,
    /** Cap of one backoff wait: 10 min. */
    maxDelayMs: 10 * MINUTE,
    /** Extra retryable status codes: none. */
    retryOn: [],
    /**
     * Longest honoured Retry-After (longer ones are clamped, with a warning): 5 min. A 429/503 holds the whole
     * service, so one answer asking for a day must not stop every job of it for long (issue 13).
     */
    maxRetryAfterMs: 5 * MINUTE,
    /** Time a job may be held (breaker open, 429/503) before holds use attempts: 1 h. */
    maxHoldMs: 60 * MINUTE,
  },
  breaker: {
    /** Failure percentage in the rolling window that opens the breaker: 50 %. */
    errorThresholdPercentage: 50,
    /** Calls in the window before the percentage counts: 10. */
    volumeThreshold: 10,
    /** Rolling window: 10 s. */
    rollingWindowMs: 10 * SECOND,
    /** Open time before one probe call decides: 30 s. */
    resetTimeoutMs: 30 * SECOND,
  },
  /** Largest response body read: 1 MiB. */
  maxResponseBytes: 1024 * 1024,
  /** Largest job input (JSON bytes): 256 KiB. */
  maxInputBytes: 256 * 1024,
  /** A tenant's job without its own value of a secret uses the global one: `fallback`. */
  tenantSecrets: 'fallback',
} as const satisfies ServiceDefaults;

export const OPERATION_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_.-]{0,127}$/;
export const HTTP_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'] as const;
export const AUTH_TYPES = ['none', 'bearer', 'basic', 'apiKey', 'oauth2'] as const;
export const TENANT_SECRETS_MODES = ['fallback', 'required'] as const;
/** How an oauth2 client authenticates to the token endpoint (RFC 6749 §2.3.1). */
export const OAUTH2_CLIENT_AUTH = ['basic', 'body'] as const;
/** Node.js fires a timer longer than 2^31 - 1 ms at once, so no `…Ms` option may exceed it. */
export const MAX_TIMER_MS = 2_147_483_647;

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Framing headers undici sets itself (and refuses or mishandles when given). */
const MANAGED_HEADERS = new Set([
  'connection',
  'content-length',
  'expect',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
]);
/** Names other tools use, mapped to Ferry's (`timeout` → `timeoutMs` is found by the unit rule). */
const SERVICE_ALIASES: Readonly<Record<string, string>> = {
  url: 'baseUrl',
  baseURL: 'baseUrl',
  retries: 'retry.attempts',
  maxRetries: 'retry.attempts',
  circuitBreaker: 'breaker',
  maxBodyBytes: 'maxResponseBytes',
  onError: 'onFailure',
  failover: 'fallback',
};

/** `unknown option (did you mean timeoutMs?)`, one line per key (load.ts splits them onto their paths). */
function strictObject<T extends z.ZodRawShape>(shape: T, aliases: Readonly<Record<string, string>> = {}) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((key) => unknownOption(key, known, aliases)).join('\n');
      }
      if (issue.code === 'invalid_type') return issue.input === undefined ? 'required' : 'must be a mapping';
      return undefined;
    },
  });
}

function unknownOption(
  key: string,
  known: readonly string[],
  aliases: Readonly<Record<string, string>>,
): string {
  const suggestion = Object.hasOwn(aliases, key) ? aliases[key] : suggest(key, known);
  return suggestion === undefined
    ? `unknown option (expected one of ${known.join(', ')})`
    : `unknown option (did you mean ${suggestion}?)`;
}

/** The closest known key: same but for case, the key plus its unit (`timeout` → `timeoutMs`), or a near typo. */
export function suggest(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  const exact = known.find((candidate) => candidate.toLowerCase() === lower);
  if (exact !== undefined) return exact;
  const withUnit = known.find(
    (candidate) => candidate.toLowerCase() === `${lower}ms` || candidate.toLowerCase() === `${lower}bytes`,
  );
  if (withUnit !== undefined) return withUnit;
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const candidate of known) {
    const distance = editDistance(lower, candidate.toLowerCase());
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(
        (previous[j] as number) + 1,
        (current[j - 1] as number) + 1,
        (previous[j - 1] as number) + cost,
      );
    }
    previous = current;
  }
  return previous[b.length] as number;
}

/** `must be <expected>`, or `required (<expected>)` when the key is absent. */
function expecting(expected: string) {
  return (issue: { input?: unknown }): string =>
    issue.input === undefined ? `required (${expected})` : `must be ${expected}`;
}

function integer(min: number, max?: number) {
  const expectation = expecting(`an integer >= ${min}`);
  const base = z.number({ error: expectation }).int({ error: expectation }).min(min, { error: expectation });
  return max === undefined ? base : base.max(max, { error: `must be at most ${max}` });
}

function milliseconds(min: number) {
  return integer(min).max(MAX_TIMER_MS, {
    error: `must be at most ${MAX_TIMER_MS} (the longest timer Node.js supports, about 24.8 days)`,
  });
}

function refineTemplate(mode: TemplateMode, allowed: TemplateAllowed) {
  return (value: unknown, context: z.RefinementCtx): void => {
    try {
      compileTemplate(value, mode, '', allowed);
    } catch (error) {
      if (!(error instanceof TemplateCompileError)) throw error;
      context.addIssue({ code: 'custom', message: error.reason, path: [...error.subPath] });
    }
  };
}

/**
 * Runs a cross-field check even when another key of the same mapping has an issue (zod skips refinements of
 * a value with issues by default), so that every issue is reported in one go.
 */
const WHEN_MAPPING = {
  when: (payload: { value: unknown }) =>
    payload.value !== null && typeof payload.value === 'object' && !Array.isArray(payload.value),
};

const scalar = z.union([z.string(), z.number(), z.boolean()], {
  error: expecting('a string, number or boolean'),
});

function template(mode: TemplateMode, allowed: { input: boolean }) {
  return z.string({ error: expecting('a string') }).superRefine(refineTemplate(mode, allowed));
}

function scalarTemplate(mode: TemplateMode, allowed: { input: boolean }) {
  return scalar.superRefine(refineTemplate(mode, allowed));
}

function staticHttpUrl(value: string): string | undefined {
  if (value.includes('{{') || value.includes('}}'))
    return 'must be a static URL (templates are not supported here)';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an absolute http(s) URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http(s) URL';
  if (url.username !== '' || url.password !== '') return 'must not contain credentials (use auth)';
  return undefined;
}

const headerName = z
  .string()
  .regex(HEADER_NAME, { error: "must be a header name (letters, digits and !#$%&'*+.^_`|~-)" })
  .refine((name) => !MANAGED_HEADERS.has(name.toLowerCase()), {
    error: 'is set by the HTTP client and may not be configured',
  });

const headers = z
  .record(headerName, scalarTemplate('header', { input: true }), {
    error: 'must be a mapping of header names to values',
  })
  .superRefine((record, context) => {
    const seen = new Map<string, string>();
    for (const name of Object.keys(record)) {
      const first = seen.get(name.toLowerCase());
      if (first !== undefined) {
        context.addIssue({
          code: 'custom',
          message: `duplicates ${first} (header names are case-insensitive)`,
          path: [name],
        });
      }
      seen.set(name.toLowerCase(), name);
    }
  }, WHEN_MAPPING);

const baseUrl = z.string({ error: expecting('an http(s) URL') }).superRefine((value, context) => {
  if (!value.includes('{{') && !value.includes('}}')) {
    const problem = staticHttpUrl(value);
    if (problem !== undefined) context.addIssue({ code: 'custom', message: problem });
    else if (/[?#]/.test(value))
      context.addIssue({ code: 'custom', message: 'must not contain a query or fragment' });
    return;
  }
  refineTemplate('url', { input: false })(value, context);
  const prefix = value.slice(0, value.indexOf('{{'));
  if (prefix !== '' && !/^https?:\/\//i.test(prefix)) {
    context.addIssue({
      code: 'custom',
      message: 'must start with http:// or https:// (or with a {{ secrets.x }} URL)',
    });
  }
});

const secretTemplate = (mode: TemplateMode) => template(mode, { input: false });

/** Form fields of the token request Ferry sets itself; `params` may not set them (use scope and audience). */
const OAUTH2_OWN_PARAMS: Readonly<Record<string, string>> = {
  grant_type: 'always client_credentials',
  client_id: 'use clientId',
  client_secret: 'use clientSecret',
  scope: 'use scope',
  audience: 'use audience',
};

/**
 * Extra form fields of the token request (`resource`, `tenant_id`, …): plain text, sent as written. No
 * templates: a `{{ … }}` would otherwise be sent literally, which is never what was meant.
 */
const tokenParams = z
  .record(
    z.string().min(1, { error: 'must not be empty' }),
    z
      .string({ error: 'must be a string' })
      .refine((value) => !value.includes('{{') && !value.includes('}}'), {
        error: 'must be plain text (templates are not supported here)',
      }),
    { error: 'must be a mapping of form field names to strings' },
  )
  .superRefine((record, context) => {
    for (const name of Object.keys(record)) {
      if (Object.hasOwn(OAUTH2_OWN_PARAMS, name))
        context.addIssue({
          code: 'custom',
          message: `is set by Ferry (${OAUTH2_OWN_PARAMS[name]})`,
          path: [name],
        });
    }
  }, WHEN_MAPPING);

const auth = z.discriminatedUnion(
  'type',
  [
    strictObject({ type: z.literal('none') }),
    strictObject({ type: z.literal('bearer'), token: secretTemplate('header') }),
    strictObject({
      type: z.literal('basic'),
      username: secretTemplate('value'),
      password: secretTemplate('value'),
    }),
    strictObject({
      type: z.literal('apiKey'),
      header: headerName.optional(),
      query: z.string().min(1, { error: 'must not be empty' }).optional(),
      value: secretTemplate('header'),
    }).superRefine((value, context) => {
      if ((value.header === undefined) === (value.query === undefined)) {
        context.addIssue({ code: 'custom', message: 'needs exactly one of header or query' });
      }
    }),
    strictObject({
      type: z.literal('oauth2'),
      tokenUrl: z.string({ error: expecting('an http(s) URL') }).superRefine((value, context) => {
        const problem = staticHttpUrl(value);
        if (problem !== undefined) context.addIssue({ code: 'custom', message: problem });
      }),
      clientId: secretTemplate('value'),
      clientSecret: secretTemplate('value'),
      scope: z.string().min(1, { error: 'must not be empty' }).optional(),
      audience: z.string().min(1, { error: 'must not be empty' }).optional(),
      params: tokenParams.optional(),
      clientAuth: z
        .enum(OAUTH2_CLIENT_AUTH, { error: `must be one of ${OAUTH2_CLIENT_AUTH.join(', ')}` })
        .optional(),
    }),
  ],
  {
    error: (issue) =>
      issue.code === 'invalid_union'
        ? `must be one of ${AUTH_TYPES.join(', ')}`
        : issue.code === 'invalid_type'
          ? `must be a mapping with type: one of ${AUTH_TYPES.join(', ')}`
          : undefined,
  },
);

// ---- Signing (issue 17): the layouts and keys; signing.ts compiles them.

function signingLayout(allowed: readonly SigningField[], required?: SigningField) {
  return z.string({ error: expecting('a string') }).superRefine((value, context) => {
    const parsed = parseLayout(value, allowed, required);
    if (typeof parsed === 'string') context.addIssue({ code: 'custom', message: parsed });
  });
}

/** A key is a secret: its template must read one, and never input (a producer must not choose the key). */
const signingKey = z
  .string({ error: expecting('a key template ({{ secrets.name }})') })
  .superRefine((value, context) => {
    try {
      if (compileTemplate(value, 'value', '', { input: false }).secretNames.length === 0) {
        context.addIssue({
          code: 'custom',
          message: 'must read a secret ({{ secrets.name }}): a signing key is never written in the file',
        });
      }
    } catch (error) {
      if (!(error instanceof TemplateCompileError)) throw error;
      context.addIssue({ code: 'custom', message: error.reason });
    }
  });

const signingHeaders = z
  .record(headerName, signingLayout(HEADER_FIELDS), {
    error: 'must be a mapping of header names to layouts',
  })
  .superRefine((record, context) => {
    const seen = new Set<string>();
    for (const name of Object.keys(record)) {
      const lower = name.toLowerCase();
      if (seen.has(lower))
        context.addIssue({
          code: 'custom',
          message: 'duplicates another header (names are case-insensitive)',
          path: [name],
        });
      seen.add(lower);
    }
  }, WHEN_MAPPING);

const signing = strictObject(
  {
    scheme: z.enum(SIGNING_SCHEMES, { error: `must be one of ${SIGNING_SCHEMES.join(', ')}` }).optional(),
    keys: z
      .array(signingKey, { error: expecting('a list of key templates ({{ secrets.name }})') })
      .min(1, { error: 'must name at least one key' })
      .max(MAX_SIGNING_KEYS, { error: `must name at most ${MAX_SIGNING_KEYS} keys` }),
    algorithm: z
      .enum(SIGNING_ALGORITHMS, { error: `must be one of ${SIGNING_ALGORITHMS.join(', ')}` })
      .optional(),
    encoding: z
      .enum(SIGNING_ENCODINGS, { error: `must be one of ${SIGNING_ENCODINGS.join(', ')}` })
      .optional(),
    keyFormat: z
      .enum(SIGNING_KEY_FORMATS, { error: `must be one of ${SIGNING_KEY_FORMATS.join(', ')}` })
      .optional(),
    payload: signingLayout(PAYLOAD_FIELDS, 'body').optional(),
    headers: signingHeaders.optional(),
    signature: signingLayout(SIGNATURE_FIELDS, 'signature').optional(),
    separator: z
      .string({ error: expecting('a string') })
      .regex(/^[\x20-\x7e]{1,8}$/, { error: 'must be 1 to 8 printable ASCII characters' })
      .optional(),
  },
  { key: 'keys', secret: 'keys', secrets: 'keys', header: 'headers', type: 'scheme' },
).superRefine(
  (value, context) => {
    for (const problem of signingProblems(value)) context.addIssue({ code: 'custom', ...problem });
  },
  {
    // Not on top of a wrong header or payload, which already says what is wrong (and was left out of `value`).
    when: (payload) =>
      WHEN_MAPPING.when(payload) &&
      !payload.issues.some((issue) => issue.path?.[0] === 'headers' || issue.path?.[0] === 'payload'),
  },
);

/** An operation's `signing:` replaces its service's; `false` sends its requests unsigned. */
const operationSigning = z.unknown().transform((value, context): SigningDocument | false => {
  if (value === false) return false;
  const parsed = signing.safeParse(value);
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const lines = issue.message.split('\n');
      issue.keys.forEach((key, i) =>
        context.addIssue({
          code: 'custom',
          message: lines[i] ?? 'unknown option',
          path: [...issue.path, key],
        }),
      );
    } else context.addIssue({ code: 'custom', message: issue.message, path: [...issue.path] });
  }
  return false;
});

const statusCodeExpectation = expecting('an HTTP status code between 400 and 599');
const statusCode = z
  .number({ error: statusCodeExpectation })
  .int({ error: statusCodeExpectation })
  .min(400, { error: statusCodeExpectation })
  .max(599, { error: statusCodeExpectation });

const retry = strictObject({
  attempts: integer(1).optional(),
  backoff: strictObject({ delayMs: milliseconds(1).optional(), maxDelayMs: milliseconds(1).optional() })
    .superRefine((backoff, context) => {
      const delayMs = backoff.delayMs ?? SERVICE_DEFAULTS.retry.delayMs;
      const maxDelayMs = backoff.maxDelayMs ?? SERVICE_DEFAULTS.retry.maxDelayMs;
      // Also runs when a sibling key is wrong (WHEN_MAPPING), so check the types first.
      if (typeof delayMs === 'number' && typeof maxDelayMs === 'number' && maxDelayMs < delayMs) {
        context.addIssue({
          code: 'custom',
          message: `must be >= delayMs (${delayMs})`,
          path: ['maxDelayMs'],
        });
      }
    }, WHEN_MAPPING)
    .optional(),
  retryOn: z.array(statusCode, { error: 'must be a list of HTTP status codes' }).optional(),
  maxRetryAfterMs: milliseconds(0).optional(),
  maxHoldMs: milliseconds(0).optional(),
});

const breaker = strictObject({
  errorThresholdPercentage: integer(1, 100).optional(),
  volumeThreshold: integer(0).optional(),
  rollingWindowMs: milliseconds(1).optional(),
  resetTimeoutMs: milliseconds(1).optional(),
});

// ---- Reactions (issue 16): onFailure rules, then, fallback. Compiled by reactions.ts, whose graph checks
// (unknown targets, fallback chains, cycles) run once every service is parsed (flow-graph.ts).

/**
 * A status a final error can carry: 2xx (a ResponseTooLargeError keeps the status of the response it cut), 3xx
 * (redirects are not followed: ClientError), 4xx and 5xx. 1xx is never final, so a rule on it could not fire.
 */
const failureStatusExpectation = expecting('an HTTP status code between 200 and 599');
const failureStatus = z
  .number({ error: failureStatusExpectation })
  .int({ error: failureStatusExpectation })
  .min(200, { error: failureStatusExpectation })
  .max(599, { error: failureStatusExpectation });

const errorTypeName = z
  .string({ error: expecting(`an error type (${ERROR_TYPES.join(', ')})`) })
  .superRefine((value, context) => {
    if (isErrorType(value)) return;
    const suggestion = suggest(value, ERROR_TYPES);
    context.addIssue({
      code: 'custom',
      message:
        suggestion === undefined
          ? `unknown error type "${value}" (expected one of ${ERROR_TYPES.join(', ')})`
          : `unknown error type "${value}" (did you mean ${suggestion}?)`,
    });
  })
  .transform((value) => value as ErrorType);

/** One value or a non-empty list of them (`errorType: AuthenticationError` or `[AuthenticationError, …]`). */
function oneOrList<T extends z.ZodType>(item: T) {
  return z.unknown().transform((value, context): z.output<T>[] => {
    if (Array.isArray(value) && value.length === 0) {
      context.addIssue({ code: 'custom', message: 'must not be an empty list (leave it out to match any)' });
      return [];
    }
    const out: z.output<T>[] = [];
    (Array.isArray(value) ? value : [value]).forEach((each: unknown, index) => {
      const parsed = item.safeParse(each);
      if (parsed.success) out.push(parsed.data);
      else {
        for (const issue of parsed.error.issues) {
          const path = Array.isArray(value) ? [index, ...issue.path] : [...issue.path];
          context.addIssue({ code: 'custom', message: issue.message, path });
        }
      }
    });
    return out;
  });
}

const failureWhen = strictObject({
  errorType: oneOrList(errorTypeName).optional(),
  status: oneOrList(failureStatus).optional(),
}).refine((when) => when.errorType !== undefined || when.status !== undefined, {
  error: 'must name errorType, status or both (leave when out to match any error)',
  // Not on top of an unknown key (`errorTypes:`), which already says what is wrong.
  when: (payload) => payload.issues.length === 0,
});

/**
 * `enqueue: { service, operation, input?, maxDepth? }`: the follow-up job. Its input is a template (mode
 * `value`) that never reads secrets (it is stored in Redis) and reads the roots of its reaction.
 */
function enqueueSchema(reaction: 'onFailure' | 'then') {
  return strictObject({
    service: z.string({ error: expecting('a service name') }).min(1, { error: 'must not be empty' }),
    operation: z.string({ error: expecting('an operation name') }).min(1, { error: 'must not be empty' }),
    input: z
      .unknown()
      .superRefine(refineTemplate('value', { input: true, secrets: false, reaction }))
      .optional(),
    maxDepth: integer(1).optional(),
  });
}

const failureRule = strictObject({ when: failureWhen.optional(), enqueue: enqueueSchema('onFailure') });
const failureRules = z.array(failureRule, { error: expecting('a list of rules ({ when?, enqueue })') });
const thenStep = strictObject({ enqueue: enqueueSchema('then') });
const fallback = strictObject({
  service: z.string({ error: expecting('a service name') }).min(1, { error: 'must not be empty' }),
});

export type FailureRuleDocument = z.output<typeof failureRule>;
export type EnqueueDocument = z.output<ReturnType<typeof enqueueSchema>>;

/** Names other tools use for an operation's keys, mapped to Ferry's. */
const OPERATION_ALIASES: Readonly<Record<string, string>> = { onError: 'onFailure', next: 'then' };

const operation = strictObject(
  {
    method: z
      .string({ error: expecting(`one of ${HTTP_METHODS.join(', ')}`) })
      .transform((method) => method.toUpperCase())
      .pipe(z.enum(HTTP_METHODS, { error: `must be one of ${HTTP_METHODS.join(', ')}` })),
    path: template('path', { input: true })
      .refine((path) => path.startsWith('/'), { error: 'must start with "/"' })
      .refine((path) => !path.startsWith('//'), {
        error: 'must not start with "//" (it would name another host)',
      }),
    body: z
      .unknown()
      .superRefine(refineTemplate('value', { input: true }))
      .optional(),
    query: z
      .record(z.string().min(1, { error: 'must not be empty' }), scalarTemplate('value', { input: true }), {
        error: 'must be a mapping of parameter names to values',
      })
      .optional(),
    headers: headers.optional(),
    timeoutMs: milliseconds(1).optional(),
    onFailure: failureRules.optional(),
    then: thenStep.optional(),
    signing: operationSigning.optional(),
    sensitive: z.boolean({ error: 'must be true or false' }).optional(),
  },
  OPERATION_ALIASES,
).superRefine((value, context) => {
  if (value.body !== undefined && (value.method === 'GET' || value.method === 'HEAD')) {
    context.addIssue({
      code: 'custom',
      message: `${value.method} requests cannot have a body`,
      path: ['body'],
    });
  }
});

const operations = z
  .record(
    z
      .string()
      .regex(OPERATION_NAME_PATTERN, { error: 'operation name must match [A-Za-z][A-Za-z0-9_.-]{0,127}' }),
    operation,
    {
      error: (issue) =>
        issue.input === undefined
          ? 'required (at least one operation)'
          : 'must be a mapping of operation names to operations',
    },
  )
  .refine((record) => Object.keys(record).length > 0, { error: 'must define at least one operation' });

/**
 * `egress:` (issue 13): which private, loopback, CGNAT, multicast or reserved addresses a service whose host
 * is not written literally in the file may reach. Link-local and metadata addresses stay refused whatever
 * this says.
 */
const egress = strictObject({
  allowPrivate: z.boolean({ error: expecting('true or false') }).optional(),
  allow: z
    .array(
      z
        .string({ error: 'must be a CIDR or host name' })
        .refine((entry) => parseAllowEntry(entry) !== undefined, {
          error: 'not a CIDR or host name',
        }),
      { error: 'must be a list of CIDRs and host names' },
    )
    .optional(),
});

/** A template that reads the tenant (`{{ tenant }}`): refused where the tenant may not choose the value. */
const READS_TENANT = /\{\{[^}]*\btenant\b/;

/**
 * `proxy:` (issue 17): `none` (always direct), or the proxy's URL, a template that may read secrets but never
 * input or the tenant (a producer must not choose where calls are tunnelled). Checked again once rendered.
 */
const proxy = z
  .string({ error: expecting(`"${PROXY_NONE}" or an http(s) proxy URL (a template over secrets)`) })
  .min(1, { error: 'must not be empty' })
  .superRefine((value, context) => {
    if (value === PROXY_NONE) return;
    if (READS_TENANT.test(value)) {
      context.addIssue({ code: 'custom', message: 'may not read the tenant (only secrets)' });
      return;
    }
    if (!value.includes('{{') && !value.includes('}}')) {
      const problem = checkProxyUrl(value);
      if (problem !== undefined) context.addIssue({ code: 'custom', message: problem });
      return;
    }
    refineTemplate('header', { input: false })(value, context);
  });

/** Why a (rendered) proxy URL is refused, or undefined: http(s) only, no path, query or fragment. */
export function checkProxyUrl(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an absolute http(s) proxy URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return 'must be an http:// or https:// proxy URL';
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '')
    return 'must not have a path, query or fragment (scheme, credentials, host and port only)';
  return undefined;
}

/** `tls:` (issue 17): PEM values and the server name are templates over secrets (never input or tenant). */
const tlsTemplate = z
  .string({ error: expecting('a string (PEM text or a {{ secrets.x }} template)') })
  .min(1, { error: 'must not be empty' })
  .superRefine((value, context) => {
    if (READS_TENANT.test(value)) context.addIssue({ code: 'custom', message: 'may not read the tenant' });
    else refineTemplate('value', { input: false })(value, context);
  });
const tls = strictObject({
  ca: tlsTemplate.optional(),
  cert: tlsTemplate.optional(),
  key: tlsTemplate.optional(),
  passphrase: tlsTemplate.optional(),
  servername: tlsTemplate.optional(),
  minVersion: z.enum(TLS_MIN_VERSIONS, { error: `must be one of ${TLS_MIN_VERSIONS.join(', ')}` }).optional(),
}).superRefine((value, context) => {
  if ((value.cert === undefined) !== (value.key === undefined))
    context.addIssue({
      code: 'custom',
      message: 'cert and key go together (a client certificate needs its key)',
    });
  if (value.passphrase !== undefined && value.key === undefined)
    context.addIssue({ code: 'custom', message: 'passphrase needs key', path: ['passphrase'] });
}, WHEN_MAPPING);

const serviceShape = {
  baseUrl,
  timeoutMs: milliseconds(1).optional(),
  concurrency: integer(1).optional(),
  tenantConcurrency: integer(1).optional(),
  rateLimit: strictObject({ max: integer(1), perMs: milliseconds(1) }).optional(),
  auth: auth.optional(),
  headers: headers.optional(),
  retry: retry.optional(),
  breaker: breaker.optional(),
  maxResponseBytes: integer(1).optional(),
  maxInputBytes: integer(1).optional(),
  tenantSecrets: z
    .enum(TENANT_SECRETS_MODES, { error: `must be one of ${TENANT_SECRETS_MODES.join(', ')}` })
    .optional(),
  egress: egress.optional(),
  onFailure: failureRules.optional(),
  fallback: fallback.optional(),
  signing: signing.optional(),
  proxy: proxy.optional(),
  tls: tls.optional(),
  sensitive: z.boolean({ error: 'must be true or false' }).optional(),
  operations,
};

/** One service after `defaults:` was merged in. */
export const serviceSchema = strictObject(serviceShape, SERVICE_ALIASES);
export type ServiceDocument = z.output<typeof serviceSchema>;

/** `defaults:`: any service option, none required. */
export const serviceDefaultsSchema = strictObject(
  { ...serviceShape, baseUrl: baseUrl.optional(), operations: operations.optional() },
  SERVICE_ALIASES,
);

/** The file's top level; each service is checked on its own after the merge. */
export const servicesFileSchema = strictObject({
  defaults: z.unknown().optional(),
  services: z.record(z.string(), z.unknown(), {
    error: (issue) =>
      issue.input === undefined
        ? 'required (a mapping of service names to services)'
        : 'must be a mapping of service names to services',
  }),
  /** Checked by schedules.ts (compileSchedules). */
  schedules: z.unknown().optional(),
});

export const SERVICE_NAME_MESSAGE = 'service name must match [a-z0-9][a-z0-9_-]{0,63}';
