/**
 * Services file → ServicesConfig (DESIGN §2): read YAML → validate → merge `defaults:` → apply
 * `FERRY_SERVICE_<NAME>_URL` → compile templates → deep-freeze. Every problem is collected and reported at
 * once, one `path: expectation` line each; nothing downstream re-validates the result.
 */
import { readFile } from 'node:fs/promises';

import yaml from 'js-yaml';
import type { z } from 'zod';

import { parseAllowEntry } from '../egress.ts';
import { DEAD_LETTER_QUEUE, SERVICE_NAME_PATTERN, serviceQueueName } from '../queue-layout.ts';
import { deepFreeze } from '../time.ts';
import { checkFlowGraph } from './flow-graph.ts';
import { compileEnqueue, type CompileEnqueueInput, compileFailureRules, flowGraphOf } from './reactions.ts';
import { compileSchedules, type ScheduleIssue } from './schedules.ts';
import {
  SERVICE_DEFAULTS,
  SERVICE_NAME_MESSAGE,
  serviceDefaultsSchema,
  type ServiceDocument,
  serviceSchema,
  servicesFileSchema,
} from './schema.ts';
import { type CompiledSigning, type SigningDocument, signingFormat } from './signing.ts';
import {
  compileTemplate,
  type TemplateAllowed,
  TemplateCompileError,
  type TemplateMode,
} from './templates.ts';
import { type CompiledTls, PROXY_NONE, type ProxySetting, type TLS_TEMPLATE_FIELDS } from './transport.ts';
import type {
  AuthConfig,
  CompiledOperation,
  CompiledTemplate,
  ServiceConfig,
  ServicesConfig,
} from './types.ts';

export interface ServicesFileIssue {
  /** `services.crm.retry.attempts`, or `<file>:<line>:<column>` for YAML syntax errors. */
  readonly path: string;
  readonly message: string;
}

/** Everything wrong with a services file; the message has one `path: message` line per issue. */
export class ServicesFileError extends Error {
  override readonly name = 'ServicesFileError';
  readonly issues: readonly ServicesFileIssue[];
  /** The file the issues are in, when it was read from one (loadServicesFile). */
  readonly file: string | undefined;

  constructor(issues: readonly ServicesFileIssue[], file?: string) {
    super(issues.map((issue) => `${issue.path}: ${issue.message}`).join('\n'));
    this.file = file;
    this.issues = Object.freeze(
      issues.map((issue) => Object.freeze({ path: issue.path, message: issue.message })),
    );
  }
}

export interface ParseServicesOptions {
  /** Where the document came from (a file path), kept on the result and used in YAML error locations. */
  source?: string;
  /** Environment for `FERRY_SERVICE_<NAME>_URL` overrides; defaults to none. */
  env?: NodeJS.ProcessEnv;
}

/** `FERRY_SERVICE_<NAME>_URL`: the service name upper-cased, `-` replaced by `_`. */
export function serviceUrlEnvName(service: string): string {
  return `FERRY_SERVICE_${service.toUpperCase().replaceAll('-', '_')}_URL`;
}

/**
 * js-yaml's core schema (no timestamps or binary, so values stay JSON) plus `<<` merge keys for anchors.
 * `types` is exported by js-yaml 4 but missing from @types/js-yaml.
 */
const YAML_SCHEMA = yaml.CORE_SCHEMA.extend({
  implicit: [(yaml as unknown as { types: { merge: yaml.Type } }).types.merge],
});

/** Reads and validates a services file; throws ServicesFileError (also for a missing or unreadable file). */
export async function loadServicesFile(
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ServicesConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ServicesFileError([{ path, message: describeReadError(error) }], path);
  }
  try {
    return parseServicesYaml(text, { source: path, env });
  } catch (error) {
    if (error instanceof ServicesFileError) throw new ServicesFileError(error.issues, path);
    throw error;
  }
}

/** For `ferry config check`: the service names, or every issue. */
export async function checkServicesFile(
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ ok: true; services: string[] } | { ok: false; issues: ServicesFileIssue[] }> {
  try {
    const config = await loadServicesFile(path, env);
    return { ok: true, services: [...config.services.keys()] };
  } catch (error) {
    if (error instanceof ServicesFileError) return { ok: false, issues: [...error.issues] };
    throw error;
  }
}

/** Parses YAML text, then validates it like parseServicesConfig. */
export function parseServicesYaml(text: string, options: ParseServicesOptions = {}): ServicesConfig {
  let doc: unknown;
  try {
    doc = yaml.load(text, { schema: YAML_SCHEMA, filename: options.source });
  } catch (error) {
    if (!(error instanceof yaml.YAMLException)) throw error;
    const where = `${options.source ?? '(yaml)'}:${error.mark.line + 1}:${error.mark.column + 1}`;
    throw new ServicesFileError([{ path: where, message: `YAML syntax error: ${error.reason}` }]);
  }
  return parseServicesConfig(doc, options);
}

/** Validates a parsed services document and compiles it; throws ServicesFileError listing every issue. */
export function parseServicesConfig(doc: unknown, options: ParseServicesOptions = {}): ServicesConfig {
  const env = options.env ?? {};
  const issues: ServicesFileIssue[] = [];
  if (!isPlainObject(doc)) {
    throw new ServicesFileError([{ path: '(root)', message: 'must be a mapping with a services: key' }]);
  }
  // Top-level `x-…` keys are ignored, as in Docker Compose, so they can hold YAML anchors.
  const top = servicesFileSchema.safeParse(
    Object.fromEntries(Object.entries(doc).filter(([key]) => !key.startsWith('x-'))),
    { error: fallbackMessage },
  );
  if (!top.success) issues.push(...toIssues(top.error, []));

  const defaultsRaw = doc['defaults'] ?? {};
  const defaultsIssuePaths: PropertyKey[][] = [];
  const defaults = serviceDefaultsSchema.safeParse(defaultsRaw, { error: fallbackMessage });
  if (!defaults.success) {
    for (const issue of defaults.error.issues) defaultsIssuePaths.push([...issue.path]);
    issues.push(...toIssues(defaults.error, ['defaults']));
  }

  const services = new Map<string, ServiceConfig>();
  // Reactions (issue 16): what the flow-graph checks read once every service is parsed.
  const documents = new Map<string, ServiceDocument>();
  const servicesRaw = doc['services'];
  if (isPlainObject(servicesRaw)) {
    if (Object.keys(servicesRaw).length === 0)
      issues.push({ path: 'services', message: 'must define at least one service' });
    const envNames = new Map<string, string>();
    for (const [name, raw] of Object.entries(servicesRaw)) {
      const prefix = ['services', name];
      if (!SERVICE_NAME_PATTERN.test(name))
        issues.push({ path: formatPath(prefix), message: SERVICE_NAME_MESSAGE });
      else if (serviceQueueName(name) === DEAD_LETTER_QUEUE)
        issues.push({
          path: formatPath(prefix),
          message: `"${name}" is reserved: its queue would be the dead-letter queue`,
        });
      const merged = isPlainObject(raw) && isPlainObject(defaultsRaw) ? mergeService(defaultsRaw, raw) : raw;
      const envName = serviceUrlEnvName(name);
      const override = env[envName];
      const isOverridden = override !== undefined && override !== '' && isPlainObject(merged);
      if (isOverridden) {
        merged.baseUrl = override;
        const other = envNames.get(envName);
        if (other !== undefined) {
          issues.push({
            path: formatPath(prefix),
            message: `${envName} would also override service ${other}; rename one`,
          });
        }
        envNames.set(envName, name);
      }
      const parsed = serviceSchema.safeParse(merged, { error: fallbackMessage });
      if (!parsed.success) {
        for (const issue of toIssues(parsed.error, prefix, (path) =>
          isInherited(path, raw, defaultsIssuePaths),
        )) {
          const fromEnv = isOverridden && issue.path === formatPath([...prefix, 'baseUrl']);
          issues.push(fromEnv ? { ...issue, message: `${issue.message} (value from ${envName})` } : issue);
        }
        continue;
      }
      const compiled = compileService(name, parsed.data, issues, isOverridden ? 'env' : 'file');
      if (compiled !== undefined) services.set(name, compiled);
      if (compiled !== undefined) documents.set(name, parsed.data);
    }
    const unchecked = new Set(Object.keys(servicesRaw).filter((name) => !documents.has(name)));
    for (const issue of checkFlowGraph(flowGraphOf(documents, unchecked)))
      issues.push({ path: formatPath(issue.path), message: issue.message });
  }
  // `schedules:` (schedules.ts): after the services, whose names, operations and limits it checks.
  const scheduleIssues: ScheduleIssue[] = [];
  const schedules = compileSchedules(
    doc['schedules'],
    new Set(isPlainObject(servicesRaw) ? Object.keys(servicesRaw) : []),
    services,
    scheduleIssues,
  );
  for (const issue of scheduleIssues) issues.push({ path: formatPath(issue.path), message: issue.message });
  if (issues.length > 0) throw new ServicesFileError(dedupe(issues));
  return deepFreeze<ServicesConfig>({
    services: readonlyMap(services),
    schedules: readonlyMap(schedules),
    source: options.source,
  });
}

function compileService(
  name: string,
  doc: ServiceDocument,
  issues: ServicesFileIssue[],
  baseUrlFrom: 'file' | 'env',
): ServiceConfig | undefined {
  const secretNames = new Set<string>();
  let isBroken = false;
  const compile = (
    value: unknown,
    mode: TemplateMode,
    path: PropertyKey[],
    input: boolean,
    more: Omit<TemplateAllowed, 'input'> = {},
  ): CompiledTemplate => {
    const where = formatPath(['services', name, ...path]);
    try {
      const template = compileTemplate(value, mode, where, { ...more, input });
      for (const secret of template.secretNames) secretNames.add(secret);
      return template;
    } catch (error) {
      // The schema already checked every template; this only guards against the two drifting apart.
      if (!(error instanceof TemplateCompileError)) throw error;
      isBroken = true;
      issues.push({ path: formatPath(['services', name, ...path, ...error.subPath]), message: error.reason });
      return compileTemplate('', mode, where, { input });
    }
  };
  const headerMap = (headers: Record<string, string | number | boolean> | undefined, path: PropertyKey[]) =>
    readonlyMap(
      Object.entries(headers ?? {}).map(([header, value]) => [
        header,
        compile(value, 'header', [...path, header], true),
      ]),
    );

  const timeoutMs = doc.timeoutMs ?? SERVICE_DEFAULTS.timeoutMs;
  // Reactions (issue 16): an enqueue input never reads secrets; the service's rules follow each operation's.
  const compileInput: CompileEnqueueInput = (value, path, reaction) =>
    compile(value, 'value', path, true, { secrets: false, reaction });
  const serviceRules = compileFailureRules(doc.onFailure, ['onFailure'], compileInput);
  const compileSigning = (signing: SigningDocument, path: PropertyKey[]): CompiledSigning => ({
    scheme: signing.scheme ?? 'standard-webhooks',
    format: signingFormat(signing),
    keys: signing.keys.map((key, i) => compile(key, 'value', [...path, 'keys', i], false)),
  });
  const serviceSigning = doc.signing === undefined ? undefined : compileSigning(doc.signing, ['signing']);
  const operations = new Map<string, CompiledOperation>();
  for (const [operationName, operation] of Object.entries(doc.operations)) {
    const at = ['operations', operationName];
    operations.set(operationName, {
      name: operationName,
      method: operation.method,
      path: compile(operation.path, 'path', [...at, 'path'], true),
      query: readonlyMap(
        Object.entries(operation.query ?? {}).map(([key, value]) => [
          key,
          compile(value, 'value', [...at, 'query', key], true),
        ]),
      ),
      headers: headerMap(operation.headers, [...at, 'headers']),
      body:
        operation.body === undefined ? undefined : compile(operation.body, 'value', [...at, 'body'], true),
      timeoutMs: operation.timeoutMs ?? timeoutMs,
      onFailure: [
        ...compileFailureRules(operation.onFailure, [...at, 'onFailure'], compileInput),
        ...serviceRules,
      ],
      then:
        operation.then === undefined
          ? undefined
          : compileEnqueue(operation.then.enqueue, 'then', [...at, 'then', 'enqueue'], compileInput),
      signing:
        operation.signing === undefined
          ? serviceSigning
          : operation.signing === false
            ? undefined
            : compileSigning(operation.signing, [...at, 'signing']),
      sensitive: operation.sensitive ?? doc.sensitive ?? false,
    });
  }
  const retry = doc.retry;
  const breaker = doc.breaker;
  // A trailing slash would double the one every operation path starts with.
  const baseUrl = doc.baseUrl.replace(/\/+$/, '');
  const service: ServiceConfig = {
    name,
    baseUrl: compile(baseUrl, 'url', ['baseUrl'], false),
    timeoutMs,
    concurrency: doc.concurrency ?? SERVICE_DEFAULTS.concurrency,
    tenantConcurrency: doc.tenantConcurrency,
    rateLimit:
      doc.rateLimit === undefined ? undefined : { max: doc.rateLimit.max, perMs: doc.rateLimit.perMs },
    auth: compileAuth(doc.auth, (value, mode, field) => compile(value, mode, ['auth', field], false)),
    headers: headerMap(doc.headers, ['headers']),
    retry: {
      attempts: retry?.attempts ?? SERVICE_DEFAULTS.retry.attempts,
      delayMs: retry?.backoff?.delayMs ?? SERVICE_DEFAULTS.retry.delayMs,
      maxDelayMs: retry?.backoff?.maxDelayMs ?? SERVICE_DEFAULTS.retry.maxDelayMs,
      retryOn: [...new Set(retry?.retryOn ?? SERVICE_DEFAULTS.retry.retryOn)].sort((a, b) => a - b),
      maxRetryAfterMs: retry?.maxRetryAfterMs ?? SERVICE_DEFAULTS.retry.maxRetryAfterMs,
      maxHoldMs: retry?.maxHoldMs ?? SERVICE_DEFAULTS.retry.maxHoldMs,
    },
    breaker: { ...SERVICE_DEFAULTS.breaker, ...breaker },
    maxResponseBytes: doc.maxResponseBytes ?? SERVICE_DEFAULTS.maxResponseBytes,
    maxInputBytes: doc.maxInputBytes ?? SERVICE_DEFAULTS.maxInputBytes,
    tenantSecrets: doc.tenantSecrets ?? SERVICE_DEFAULTS.tenantSecrets,
    egress: {
      allowPrivate: doc.egress?.allowPrivate ?? false,
      allow: (doc.egress?.allow ?? []).flatMap((entry) => parseAllowEntry(entry) ?? []),
    },
    literalOrigin: baseUrlFrom === 'file' ? literalOriginOf(baseUrl) : undefined,
    baseUrlFrom,
    operations: readonlyMap(operations),
    secretNames: [],
    fallback: doc.fallback?.service,
    proxy: compileProxy(doc.proxy, (value) => compile(value, 'header', ['proxy'], false)),
    tls: compileTls(doc.tls, (value, field) => compile(value, 'value', ['tls', field], false)),
  };
  return isBroken ? undefined : { ...service, secretNames: [...secretNames].sort() };
}

/**
 * The origin a baseUrl writes literally (scheme, host and port all before any placeholder), else undefined:
 * `https://api.example.com/{{ secrets.account }}` has one, `https://{{ secrets.host }}/v2` and
 * `http://127.0.0.1:{{ secrets.port }}` do not (a secret choosing the port of a literal loopback host could
 * reach any local service).
 */
export function literalOriginOf(baseUrl: string): string | undefined {
  const open = baseUrl.indexOf('{{');
  const head = open === -1 ? baseUrl : baseUrl.slice(0, open);
  const match = /^(https?:\/\/[^/]*)(\/|$)/i.exec(head);
  if (match === null || (open !== -1 && match[2] === '')) return undefined;
  try {
    return new URL(match[1] as string).origin;
  } catch {
    return undefined;
  }
}

function compileAuth(
  auth: ServiceDocument['auth'],
  compile: (value: unknown, mode: TemplateMode, field: string) => CompiledTemplate,
): AuthConfig {
  switch (auth?.type) {
    case undefined:
    case 'none':
      return { type: 'none' };
    case 'bearer':
      return { type: 'bearer', token: compile(auth.token, 'header', 'token') };
    case 'basic':
      return {
        type: 'basic',
        username: compile(auth.username, 'value', 'username'),
        password: compile(auth.password, 'value', 'password'),
      };
    case 'apiKey':
      return {
        type: 'apiKey',
        header: auth.header,
        query: auth.query,
        value: compile(auth.value, 'header', 'value'),
      };
    case 'oauth2':
      return {
        type: 'oauth2',
        tokenUrl: auth.tokenUrl,
        clientId: compile(auth.clientId, 'value', 'clientId'),
        clientSecret: compile(auth.clientSecret, 'value', 'clientSecret'),
        scope: auth.scope,
        audience: auth.audience,
        params: readonlyMap(Object.entries(auth.params ?? {})),
        clientAuth: auth.clientAuth ?? 'basic',
      };
  }
}

function compileProxy(proxy: string | undefined, compile: (value: string) => CompiledTemplate): ProxySetting {
  if (proxy === undefined) return { kind: 'env' };
  if (proxy === PROXY_NONE) return { kind: 'none' };
  return { kind: 'url', url: compile(proxy) };
}

function compileTls(
  tls: ServiceDocument['tls'],
  compile: (value: string, field: string) => CompiledTemplate,
): CompiledTls | undefined {
  if (tls === undefined) return undefined;
  const field = (name: (typeof TLS_TEMPLATE_FIELDS)[number]): CompiledTemplate | undefined => {
    const value = tls[name];
    return value === undefined ? undefined : compile(value, name);
  };
  return {
    ca: field('ca'),
    cert: field('cert'),
    key: field('key'),
    passphrase: field('passphrase'),
    servername: field('servername'),
    minVersion: tls.minVersion,
  };
}

/**
 * `defaults:` deep-merged under a service: mappings merge, anything else is replaced by the service's value.
 * `auth` is replaced whole (merging a bearer default into a basic service would mix their fields), headers
 * are matched case-insensitively, and a service option set to null (or left empty) drops the default.
 */
function mergeService(
  defaults: Record<string, unknown>,
  service: Record<string, unknown>,
): Record<string, unknown> {
  const merged = merge(defaults, service);
  if (Object.hasOwn(service, 'auth')) setOwn(merged, 'auth', service['auth']);
  // Like auth: a default scheme's fields must not mix into a service's own scheme.
  if (Object.hasOwn(service, 'signing')) setOwn(merged, 'signing', service['signing']);
  for (const key of Object.keys(service)) if (service[key] === null) delete merged[key];
  return merged;
}

function merge(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
  isHeaders = false,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const overridden = new Set(Object.keys(over).map((key) => (isHeaders ? key.toLowerCase() : key)));
  for (const key of Object.keys(base)) {
    if (!overridden.has(isHeaders ? key.toLowerCase() : key) || Object.hasOwn(over, key))
      setOwn(out, key, base[key]);
  }
  for (const key of Object.keys(over)) {
    const [from, to] = [base[key], over[key]];
    const isMergeable = Object.hasOwn(base, key) && isPlainObject(from) && isPlainObject(to);
    setOwn(out, key, isMergeable ? merge(from, to, key === 'headers') : to);
  }
  return out;
}

/** Whether a service's issue is about a value it inherited from a `defaults:` entry already reported. */
function isInherited(
  path: readonly PropertyKey[],
  service: unknown,
  defaultsIssuePaths: readonly PropertyKey[][],
): boolean {
  if (hasPath(service, path)) return false;
  return defaultsIssuePaths.some((other) => isPrefix(other, path) || isPrefix(path, other));
}

function hasPath(value: unknown, path: readonly PropertyKey[]): boolean {
  let current = value;
  for (const key of path) {
    if (!isPlainObject(current) && !Array.isArray(current)) return false;
    if (!Object.hasOwn(current, key)) return false;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return true;
}

function isPrefix(prefix: readonly PropertyKey[], path: readonly PropertyKey[]): boolean {
  return prefix.length <= path.length && prefix.every((key, i) => key === path[i]);
}

function toIssues(
  error: z.ZodError,
  prefix: readonly PropertyKey[],
  isSkipped: (path: readonly PropertyKey[]) => boolean = () => false,
): ServicesFileIssue[] {
  const issues: ServicesFileIssue[] = [];
  const add = (path: readonly PropertyKey[], message: string): void => {
    if (!isSkipped(path)) issues.push({ path: formatPath([...prefix, ...path]), message });
  };
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      // schema.ts writes one line per unknown key, in the order of `keys`.
      const lines = issue.message.split('\n');
      issue.keys.forEach((key, i) => add([...issue.path, key], lines[i] ?? 'unknown option'));
    } else if (issue.code === 'invalid_key') {
      add(issue.path, issue.issues[0]?.message ?? issue.message);
    } else {
      add(issue.path, issue.message);
    }
  }
  return issues;
}

/** Messages for issues the schema did not word itself. */
function fallbackMessage(issue: z.core.$ZodRawIssue): string | undefined {
  if (issue.code === 'invalid_type') {
    const expected = Object.hasOwn(EXPECTED, issue.expected) ? EXPECTED[issue.expected] : issue.expected;
    return issue.input === undefined ? `required (${expected})` : `must be ${expected}`;
  }
  if (issue.code === 'invalid_value') return `must be one of ${issue.values.map(String).join(', ')}`;
  return undefined;
}

const EXPECTED: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
};

/** `services.crm.operations["contacts.get"].headers.X-Req`, `services.crm.retry.retryOn[1]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && /^[A-Za-z0-9_$-]+$/.test(key)) out += out === '' ? key : `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out === '' ? '(root)' : out;
}

function dedupe(issues: readonly ServicesFileIssue[]): ServicesFileIssue[] {
  const seen = new Set<string>();
  return issues.filter((issue) => {
    const key = `${issue.path}\n${issue.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function describeReadError(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  if (code === 'ENOENT') return 'services file not found';
  if (code === 'EACCES' || code === 'EPERM') return 'services file not readable (permission denied)';
  if (code === 'EISDIR') return 'is a directory, not a services file';
  return `cannot read services file (${typeof code === 'string' ? code : 'unknown error'})`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Defines an own data property, so a `__proto__` key from YAML stays data. */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/** A Map whose entries cannot change after construction (Object.freeze alone does not stop `set`). */
class FrozenMap<K, V> extends Map<K, V> {
  constructor(entries: Iterable<readonly [K, V]>) {
    super();
    for (const [key, value] of entries) super.set(key, deepFreeze(value));
    Object.freeze(this);
  }

  override set(): this {
    throw new TypeError('the services config is read-only');
  }

  override delete(): boolean {
    throw new TypeError('the services config is read-only');
  }

  override clear(): void {
    throw new TypeError('the services config is read-only');
  }
}

function readonlyMap<K, V>(entries: Iterable<readonly [K, V]>): ReadonlyMap<K, V> {
  return new FrozenMap(entries);
}
