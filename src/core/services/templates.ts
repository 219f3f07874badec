/**
 * `{{ … }}` templates of the services file (DESIGN §2, docs/services-file.md).
 *
 * Grammar: `{{ root(.segment)* }}` with optional whitespace inside the braces. Roots: `input` (then identifier
 * or integer segments; `{{ input }}` is the whole input), `secrets.<name>`, `tenant`, `job.id`,
 * `job.idempotencyKey`; in the input of an onFailure rule's enqueue also `error.type`, `error.status`,
 * `error.message` and `deadLetter.id`, in the input of a `then` enqueue `result.status`, `result.body(.segment)*`
 * and `result.headers.<allow-listed name>` (TemplateAllowed.reaction). Nothing is ever evaluated: a placeholder is a lookup, and a template is compiled once
 * at load into a closure over precomputed parts, so rendering does no parsing. Values read from `input` are
 * data: they are inserted, never expanded again (no template injection).
 */
import { ConfigurationError, EgressDeniedError, ValidationError } from '../errors.ts';
import { RESULT_HEADERS } from '../result-headers.ts';
import type { CompiledTemplate, TemplateContext } from './types.ts';

/**
 * How a template renders:
 * - `value`: a string that is exactly one placeholder keeps the JSON type of the value (a missing input field is
 *   `undefined`, so JSON drops the key); objects and arrays are compiled leaf by leaf.
 * - `path`: every placeholder's value is percent-encoded; missing, empty, `.` and `..` values are refused.
 * - `header`: the value as a string; CR, LF and NUL are refused, so is a missing value.
 * - `url` (baseUrl): a value fills only the part of the URL its placeholder stands in (see urlFormatter): a
 *   host placeholder only a host, a port placeholder only digits; no value may add userinfo, a query or a
 *   fragment (EgressDeniedError: a secret or env value must not choose more than the file lets it).
 */
export type TemplateMode = 'value' | 'path' | 'header' | 'url';

export const SECRET_NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]*$/;

/** What a template's place lets it read, beyond `tenant` and `job.*` (which every place may read). */
export interface TemplateAllowed {
  /** `input` (false in baseUrl and auth: producers never choose where a call goes). */
  readonly input: boolean;
  /**
   * `secrets.*`; default true. False in an enqueue input: a follow-up job's input is stored in Redis (and shown
   * by GET, SSE and the dead-letter queue), so a secret rendered into it would leak.
   */
  readonly secrets?: boolean;
  /**
   * The reaction whose enqueue input this is, adding its roots: `onFailure` (`error.*`, `deadLetter.id`) or
   * `then` (`result.*`). Undefined everywhere else, where those roots are refused.
   */
  readonly reaction?: 'onFailure' | 'then' | undefined;
}

/** Roots only a reaction's enqueue input may read, and where each is available (for messages). */
const REACTION_ROOTS: Readonly<Record<'onFailure' | 'then', string>> = {
  onFailure: "an onFailure rule's enqueue input",
  then: "a then step's enqueue input",
};

/** A template the services file got wrong; `reason` is the message without the location. */
export class TemplateCompileError extends ConfigurationError {
  readonly where: string;
  readonly reason: string;
  /** Location inside an object/array value (`['email']` for `body.email`), relative to `where`. */
  readonly subPath: readonly (string | number)[];

  constructor(where: string, subPath: readonly (string | number)[], reason: string) {
    const at = [where, ...subPath.map(String)].filter((part) => part !== '').join('.');
    super(at === '' ? reason : `${at}: ${reason}`, { field: at === '' ? undefined : at });
    this.where = where;
    this.subPath = subPath;
    this.reason = reason;
  }
}

type Getter = (context: TemplateContext) => unknown;
type Render = (context: TemplateContext) => unknown;

interface Placeholder {
  /** `input.a.b`, `secrets.x`, `tenant`, `job.id`: names the value in messages, never contains one. */
  readonly label: string;
  readonly get: Getter;
  readonly readsInput: boolean;
  readonly secretName: string | undefined;
  /** The reaction whose enqueue input alone may read it (`error.*`, `deadLetter.id`, `result.*`). */
  readonly reaction?: 'onFailure' | 'then';
}

interface Compiled {
  readonly render: Render;
  readonly secretNames: Set<string>;
  usesInput: boolean;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const INTEGER = /^(0|[1-9][0-9]{0,8})$/;
const PLAIN_PATH = /^[A-Za-z0-9_$.-]+$/;
const CONTROL_IN_HEADER = /[\r\n\0]/;
const INPUT_FORBIDDEN = 'which is not allowed here (producers never choose where a call goes)';
const SECRETS_FORBIDDEN =
  "which is not allowed in an enqueue input (the follow-up job's input is stored in Redis and shown by GET " +
  "and the dead-letter queue; read the secret in the follow-up operation's own templates instead)";

/**
 * Compiles a template once, at load. `where` names its location (`services.crm.operations.get.path`) in load
 * errors and in render errors. Throws TemplateCompileError on any syntax it does not know, on a placeholder
 * reading `input` where `allowed.input` is false (baseUrl, auth), and on values the mode cannot hold.
 */
export function compileTemplate(
  value: unknown,
  mode: TemplateMode,
  where: string,
  allowed: TemplateAllowed,
): CompiledTemplate {
  const compiled = compileNode(value, mode, where, [], allowed);
  const template: CompiledTemplate = {
    source: typeof value === 'string' ? value : JSON.stringify(value),
    secretNames: Object.freeze([...compiled.secretNames].sort()),
    usesInput: compiled.usesInput,
    render: compiled.render,
  };
  return Object.freeze(template);
}

function compileNode(
  value: unknown,
  mode: TemplateMode,
  where: string,
  subPath: readonly (string | number)[],
  allowed: TemplateAllowed,
): Compiled {
  const fail = (reason: string): never => {
    throw new TemplateCompileError(where, subPath, reason);
  };
  if (typeof value === 'string') return compileString(value, mode, where, subPath, allowed);
  if (mode !== 'value') {
    if (mode === 'header' && (typeof value === 'number' || typeof value === 'boolean')) {
      return compileString(String(value), mode, where, subPath, allowed);
    }
    return fail(mode === 'path' ? 'must be a string' : 'must be a string, number or boolean');
  }
  if (value === null || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) {
    return { render: () => value, secretNames: new Set(), usesInput: false };
  }
  const secretNames = new Set<string>();
  let usesInput = false;
  const absorb = (child: Compiled): Render => {
    for (const name of child.secretNames) secretNames.add(name);
    usesInput ||= child.usesInput;
    return child.render;
  };
  if (Array.isArray(value)) {
    const items = value.map((item, index) =>
      absorb(compileNode(item, mode, where, [...subPath, index], allowed)),
    );
    // JSON.stringify turns an undefined array item into null; do it here so the rendered value is plain JSON.
    return { render: (context) => items.map((item) => item(context) ?? null), secretNames, usesInput };
  }
  if (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null) {
    const entries = Object.keys(value as object).map(
      (key) =>
        [
          key,
          absorb(
            compileNode((value as Record<string, unknown>)[key], mode, where, [...subPath, key], allowed),
          ),
        ] as const,
    );
    return {
      render: (context) => {
        const out: [string, unknown][] = [];
        for (const [key, render] of entries) {
          const rendered = render(context);
          if (rendered !== undefined) out.push([key, rendered]);
        }
        // fromEntries defines own properties, so a `__proto__` key stays data.
        return Object.fromEntries(out);
      },
      secretNames,
      usesInput,
    };
  }
  return fail('must be a JSON value (string, number, boolean, null, list or mapping)');
}

function compileString(
  source: string,
  mode: TemplateMode,
  where: string,
  subPath: readonly (string | number)[],
  allowed: TemplateAllowed,
): Compiled {
  const fail = (reason: string): never => {
    throw new TemplateCompileError(where, subPath, reason);
  };
  const literals: string[] = [];
  const placeholders: Placeholder[] = [];
  let from = 0;
  for (;;) {
    const open = source.indexOf('{{', from);
    const literal = source.slice(from, open === -1 ? source.length : open);
    if (literal.includes('}}')) fail(`unbalanced "}}" in ${quote(source)}`);
    literals.push(literal);
    if (open === -1) break;
    const close = source.indexOf('}}', open + 2);
    if (close === -1 || source.slice(open + 2, close).includes('{{'))
      fail(`unclosed "{{" in ${quote(source)}`);
    const placeholder = parsePlaceholder(source.slice(open, close + 2), fail, allowed);
    if (placeholder.readsInput && !allowed.input) fail(`${quote(source)} reads input, ${INPUT_FORBIDDEN}`);
    if (placeholder.secretName !== undefined && allowed.secrets === false)
      fail(`${quote(source)} reads a secret, ${SECRETS_FORBIDDEN}`);
    if (placeholder.reaction !== undefined && placeholder.reaction !== allowed.reaction) {
      fail(
        `${quote(source)} reads ${placeholder.label}, which only ${REACTION_ROOTS[placeholder.reaction]} may ` +
          'read',
      );
    }
    placeholders.push(placeholder);
    from = close + 2;
  }
  if (mode === 'header' && literals.some((literal) => CONTROL_IN_HEADER.test(literal))) {
    fail('header values must not contain CR, LF or NUL');
  }
  const urlParts = mode === 'url' ? urlPartsOf(literals, fail) : undefined;
  const secretNames = new Set(
    placeholders.flatMap((p) => (p.secretName === undefined ? [] : [p.secretName])),
  );
  const usesInput = placeholders.some((p) => p.readsInput);
  return {
    render: buildRender(source, mode, where, literals, placeholders, urlParts),
    secretNames,
    usesInput,
  };
}

/** Which part of a baseUrl a placeholder fills: `whole` when it comes before `://` (a whole-URL value). */
type UrlPart = 'whole' | 'host' | 'port' | 'path';

/**
 * The part of the URL each placeholder of a baseUrl stands in, from the literal text around it. Userinfo,
 * a query or a fragment in the literal text is refused here (the schema says the same of a static URL).
 */
function urlPartsOf(literals: readonly string[], fail: (reason: string) => never): UrlPart[] {
  let part: UrlPart | 'scheme' = 'scheme';
  let inBrackets = false;
  const parts: UrlPart[] = [];
  literals.forEach((literal, index) => {
    let from = 0;
    if (part === 'scheme') {
      const end = literal.indexOf('://');
      if (end !== -1) [part, from] = ['host', end + 3];
    }
    for (let i = from; i < literal.length && part !== 'scheme'; i++) {
      const char = literal[i] as string;
      if (char === '?' || char === '#') fail('must not contain a query or fragment');
      if (part === 'path') continue;
      if (char === '@') fail('must not contain credentials (use auth)');
      if (char === '[') inBrackets = true;
      else if (char === ']') inBrackets = false;
      else if (char === '/') part = 'path';
      else if (char === ':' && part === 'host' && !inBrackets) part = 'port';
    }
    if (index < literals.length - 1) parts.push(part === 'scheme' ? 'whole' : part);
  });
  return parts;
}

/** The roots a place may read, for the message refusing anything else. */
function supportedRoots(allowed: TemplateAllowed): string {
  const roots = [
    'input(.field)*',
    ...(allowed.secrets === false ? [] : ['secrets.<name>']),
    'tenant',
    'job.id',
    'job.idempotencyKey',
    ...(allowed.reaction === 'onFailure'
      ? ['error.type', 'error.status', 'error.message', 'deadLetter.id']
      : allowed.reaction === 'then'
        ? ['result.status', 'result.body(.field)*', 'result.headers.<name>']
        : []),
  ];
  return `${roots.slice(0, -1).join(', ')} and ${roots.at(-1) as string}`;
}

function parsePlaceholder(
  text: string,
  fail: (reason: string) => never,
  allowed: TemplateAllowed,
): Placeholder {
  const expression = text.slice(2, -2).trim();
  if (expression === '') return fail(`empty placeholder ${quote(text)}`);
  if (!PLAIN_PATH.test(expression)) {
    return fail(
      `unsupported placeholder ${quote(text)}: only ${supportedRoots(allowed)} ` +
        '(no expressions, filters or calls)',
    );
  }
  const [root = '', ...rest] = expression.split('.');
  switch (root) {
    case 'input': {
      const get = fieldGetter(rest, text, fail, (context) => context.input);
      return { label: expression, get, readsInput: true, secretName: undefined };
    }
    case 'error': {
      const field = rest.length === 1 ? rest[0] : undefined;
      if (field !== 'type' && field !== 'status' && field !== 'message') {
        return fail(
          `unknown error field in ${quote(text)} (expected error.type, error.status or error.message)`,
        );
      }
      const get: Getter = (context) => context.error?.[field];
      return { label: expression, get, readsInput: false, secretName: undefined, reaction: 'onFailure' };
    }
    case 'deadLetter':
      if (rest.length !== 1 || rest[0] !== 'id')
        return fail(`unknown deadLetter field in ${quote(text)} (expected deadLetter.id)`);
      return {
        label: expression,
        get: (context) => context.deadLetter?.id,
        readsInput: false,
        secretName: undefined,
        reaction: 'onFailure',
      };
    case 'result':
      return resultPlaceholder(expression, rest, text, fail);
    case 'secrets': {
      const name = rest.join('.');
      if (!SECRET_NAME_PATTERN.test(name)) {
        return fail(`invalid secret name "${name}" in ${quote(text)} (expected [a-z0-9][a-z0-9_.-]*)`);
      }
      return { label: `secrets.${name}`, get: secretGetter(name), readsInput: false, secretName: name };
    }
    case 'tenant':
      if (rest.length > 0) return fail(`${quote(text)}: tenant has no fields`);
      return { label: 'tenant', get: (context) => context.tenant, readsInput: false, secretName: undefined };
    case 'job':
      if (rest.length === 1 && rest[0] === 'id') {
        return {
          label: 'job.id',
          get: (context) => context.job.id,
          readsInput: false,
          secretName: undefined,
        };
      }
      if (rest.length === 1 && rest[0] === 'idempotencyKey') {
        const get: Getter = (context) => context.job.idempotencyKey;
        return { label: 'job.idempotencyKey', get, readsInput: false, secretName: undefined };
      }
      return fail(`unknown job field in ${quote(text)} (expected job.id or job.idempotencyKey)`);
    default:
      return fail(`unknown template root "${root}" in ${quote(text)}`);
  }
}

/** `result.status`, `result.body(.segment)*`, `result.headers.<name>` (a name the result keeps). */
function resultPlaceholder(
  expression: string,
  rest: readonly string[],
  text: string,
  fail: (reason: string) => never,
): Placeholder {
  const [field, ...segments] = rest;
  const placeholder = (get: Getter): Placeholder => ({
    label: expression,
    get,
    readsInput: false,
    secretName: undefined,
    reaction: 'then',
  });
  if (field === 'status' && segments.length === 0) return placeholder((context) => context.result?.status);
  if (field === 'body')
    return placeholder(fieldGetter(segments, text, fail, (context) => context.result?.body));
  if (field === 'headers' && segments.length === 1) {
    const name = (segments[0] as string).toLowerCase();
    if (!RESULT_HEADERS.has(name)) {
      return fail(
        `${quote(text)}: a result keeps only the headers ${[...RESULT_HEADERS].join(', ')} ` +
          `(not "${segments[0] as string}")`,
      );
    }
    return placeholder((context) => {
      const headers = context.result?.headers;
      return headers !== undefined && Object.hasOwn(headers, name) ? headers[name] : undefined;
    });
  }
  return fail(
    `unknown result field in ${quote(text)} (expected result.status, result.body(.field)* or ` +
      'result.headers.<name>)',
  );
}

/** Reads `segments` (identifiers, or integers for list items) below the value `base` returns; own keys only. */
function fieldGetter(
  rest: readonly string[],
  text: string,
  fail: (reason: string) => never,
  base: Getter,
): Getter {
  const segments = rest.map((segment) => {
    if (INTEGER.test(segment)) return { key: segment, index: Number(segment) };
    if (IDENTIFIER.test(segment)) return { key: segment, index: undefined };
    return fail(`invalid field "${segment}" in ${quote(text)} (expected an identifier or an integer)`);
  });
  return (context) => {
    let current = base(context);
    for (const segment of segments) {
      if (Array.isArray(current)) {
        current = segment.index === undefined ? undefined : current[segment.index];
      } else if (current !== null && typeof current === 'object' && Object.hasOwn(current, segment.key)) {
        current = (current as Record<string, unknown>)[segment.key];
      } else {
        return undefined;
      }
      if (current === undefined) return undefined;
    }
    return current;
  };
}

function secretGetter(name: string): Getter {
  return (context) => {
    const value = context.secrets.get(name);
    // The name only: a secret value never goes into a message.
    if (value === undefined)
      throw new ConfigurationError(`unknown secret "${name}"`, { field: `secrets.${name}` });
    return value;
  };
}

function buildRender(
  source: string,
  mode: TemplateMode,
  where: string,
  literals: readonly string[],
  placeholders: readonly Placeholder[],
  urlParts: readonly UrlPart[] | undefined,
): Render {
  const head = literals[0] ?? '';
  if (placeholders.length === 0) return () => head;
  if (urlParts !== undefined) {
    const formats = urlParts.map((part) => urlFormatter(part, source));
    const tails = literals.slice(1);
    return (context) => {
      let out = head;
      for (let i = 0; i < placeholders.length; i++) {
        const placeholder = placeholders[i] as Placeholder;
        out += (formats[i] as UrlFormat)(placeholder.get(context), placeholder.label) + (tails[i] as string);
      }
      return out;
    };
  }
  const format = formatter(source, mode, where);
  const only = placeholders[0];
  if (
    mode === 'value' &&
    placeholders.length === 1 &&
    head === '' &&
    literals[1] === '' &&
    only !== undefined
  ) {
    return only.get;
  }
  const tails = literals.slice(1);
  return (context) => {
    let out = head;
    for (let i = 0; i < placeholders.length; i++) {
      const placeholder = placeholders[i] as Placeholder;
      out += format(placeholder.get(context), placeholder.label) + (tails[i] as string);
    }
    return out;
  };
}

function formatter(
  source: string,
  mode: TemplateMode,
  where: string,
): (value: unknown, label: string) => string {
  switch (mode) {
    case 'value':
    case 'url':
      return (value) => toText(value);
    case 'path':
      return (value, label) => encodePathValue(value, label, source);
    case 'header': {
      const headerName = /\.headers\.([^.]+)$/.exec(where)?.[1];
      const field = headerName === undefined ? where : `headers.${headerName}`;
      const subject = headerName === undefined ? where : `header ${headerName}`;
      return (value, label) => {
        if (value === undefined || value === null) {
          throw new ValidationError(`${label} is missing (needed by ${subject})`, { field: label });
        }
        const text = toText(value);
        if (text.includes('\r') || text.includes('\n') || text.includes('\0')) {
          throw new ValidationError(
            `${subject}: ${label} contains CR, LF or NUL; refused (header injection)`,
            {
              field,
            },
          );
        }
        return text;
      };
    }
  }
}

type UrlFormat = (value: unknown, label: string) => string;

/** Host labels (any script), dots, `-` and `_`; or a bracketed IPv6 literal. */
const HOST_VALUE = /^(?:[\p{L}\p{N}._-]+|\[[0-9A-Fa-f:.]+\])$/u;
const PORT_VALUE = /^[0-9]{1,5}$/;
/** Whitespace, controls and backslash (WHATWG URL reads `\` as `/`): never in any part of a baseUrl value. */
const URL_UNSAFE = /[\s\p{Cc}\\]/u;

/**
 * A value that fills a host may fill only the host: no `:port` (unless the template has a port placeholder),
 * no `/path`, `?`, `#`, `@userinfo`, backslash, whitespace or control character. `127.0.0.1:8080/evil?` in a
 * host secret would otherwise pick the port and the path. The message names the placeholder, never the value.
 */
function urlFormatter(part: UrlPart, source: string): UrlFormat {
  return (value, label) => {
    const refuse = (problem: string): never => {
      throw new EgressDeniedError(`${label} ${problem} (baseUrl ${quote(source)}); refused`, {
        field: 'baseUrl',
      });
    };
    if (value === undefined || value === null) return refuse('is missing');
    const text = toText(value);
    if (text === '') return refuse('is empty');
    switch (part) {
      case 'host':
        if (!HOST_VALUE.test(text)) return refuse('may fill only the host: it holds another part of a URL');
        return text;
      case 'port':
        if (!PORT_VALUE.test(text) || Number(text) > 65_535) return refuse('must be a port number');
        return text;
      case 'path':
        if (URL_UNSAFE.test(text) || /[?#]/.test(text))
          return refuse('must not hold a query, fragment, backslash, whitespace or control character');
        return text;
      case 'whole':
        if (URL_UNSAFE.test(text))
          return refuse('must not hold a backslash, whitespace or control character');
        return text;
    }
  };
}

/** Mixed strings: strings as they are, numbers and booleans as JSON, objects JSON-encoded, null/missing as "". */
function toText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === undefined || value === null) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/**
 * A path value becomes exactly one encoded segment (or part of one). `.` and `..` are refused rather than
 * sent as `%2E`/`%2E%2E`: WHATWG URL parsing (`new URL`, hence undici given a URL string) and common proxies
 * (nginx) treat `%2E%2E` as `..` and would resolve it, which is the escape this rule exists to prevent.
 */
function encodePathValue(value: unknown, label: string, source: string): string {
  const refuse = (problem: string): never => {
    throw new ValidationError(`${label} ${problem} (path ${quote(source)})`, { field: label });
  };
  if (value === undefined || value === null) return refuse('is missing');
  if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
    return refuse('must be a string, number or boolean');
  }
  const text = String(value);
  if (text === '') return refuse('must not be empty');
  if (text === '.' || text === '..') return refuse('must not be "." or ".." (path traversal)');
  try {
    return encodeURIComponent(text);
  } catch {
    // URIError: a lone surrogate cannot be encoded as UTF-8.
    return refuse('is not well-formed Unicode');
  }
}

function quote(text: string): string {
  return JSON.stringify(text);
}
