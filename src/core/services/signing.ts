/**
 * `signing:` (issue 17): how each outgoing request of a service (or operation) is signed. The Standard Webhooks
 * scheme (https://www.standardwebhooks.com) by default, Stripe's as a preset, or a custom layout. Everything is
 * checked and compiled here at load; the worker (src/worker/http/signing.ts) only fills the layouts in.
 *
 * A layout is plain text with `{field}` placeholders (single braces: it is not a `{{ … }}` template, it reads no
 * input, secret or tenant, only the values the signer computes).
 */
import type { CompiledTemplate } from './types.ts';

export const SIGNING_SCHEMES = ['standard-webhooks', 'stripe', 'custom'] as const;
export const SIGNING_ALGORITHMS = ['sha256', 'sha512'] as const;
export const SIGNING_ENCODINGS = ['base64', 'hex'] as const;
/**
 * How a rendered key becomes the HMAC key's bytes. `whsec`: Standard Webhooks' serialisation, an optional
 * `whsec_` prefix then base64 (the prefix is dropped, the rest decoded; anything else is refused). `utf8`: the
 * text's own UTF-8 bytes, prefix and all (Stripe's `whsec_…` secrets are used this way).
 */
export const SIGNING_KEY_FORMATS = ['whsec', 'utf8'] as const;
/** Keys signed with at once: the current one and those being rotated out. */
export const MAX_SIGNING_KEYS = 8;

export type SigningScheme = (typeof SIGNING_SCHEMES)[number];
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];
export type SigningEncoding = (typeof SIGNING_ENCODINGS)[number];
export type SigningKeyFormat = (typeof SIGNING_KEY_FORMATS)[number];

/** What the signer computes, by the name a layout gives it. */
export type SigningField = 'id' | 'timestamp' | 'body' | 'signature' | 'signatures';

/** The fields each layout may use; the first of `required` must occur exactly once. */
export const PAYLOAD_FIELDS: readonly SigningField[] = ['id', 'timestamp', 'body'];
export const HEADER_FIELDS: readonly SigningField[] = ['id', 'timestamp', 'signatures'];
export const SIGNATURE_FIELDS: readonly SigningField[] = ['signature'];

/** A parsed layout: `literals[i]`, then `fields[i]`, …, then the last literal. */
export interface SigningLayout {
  readonly literals: readonly string[];
  readonly fields: readonly SigningField[];
}

/** A scheme's fields, all known (a preset with the file's overrides, or a custom scheme). */
export interface SigningFormat {
  readonly algorithm: SigningAlgorithm;
  readonly encoding: SigningEncoding;
  readonly keyFormat: SigningKeyFormat;
  /** The signed text; holds `{body}` exactly once. */
  readonly payload: SigningLayout;
  /** Header (lower-case name) → its value; exactly one holds `{signatures}`. */
  readonly headers: readonly (readonly [string, SigningLayout])[];
  /** One key's signature (`v1,{signature}`); holds `{signature}` exactly once. */
  readonly signature: SigningLayout;
  /** Between the signatures of several keys in `{signatures}`. */
  readonly separator: string;
}

export interface CompiledSigning {
  readonly scheme: SigningScheme;
  readonly format: SigningFormat;
  /**
   * Key templates (mode `value`, secrets and tenant only), current key first. One that renders empty is
   * skipped; at least one must render (ConfigurationError otherwise).
   */
  readonly keys: readonly CompiledTemplate[];
}

/** The `signing:` mapping as the schema leaves it. */
export interface SigningDocument {
  scheme?: SigningScheme | undefined;
  keys: string[];
  algorithm?: SigningAlgorithm | undefined;
  encoding?: SigningEncoding | undefined;
  keyFormat?: SigningKeyFormat | undefined;
  payload?: string | undefined;
  headers?: Record<string, string> | undefined;
  signature?: string | undefined;
  separator?: string | undefined;
}

interface FormatSource {
  algorithm: SigningAlgorithm;
  encoding: SigningEncoding;
  keyFormat: SigningKeyFormat;
  payload: string;
  headers: Record<string, string>;
  signature: string;
  separator: string;
}

/** The presets, written as a services file would write them (docs/services-file.md § Signing). */
export const SIGNING_PRESETS: Readonly<Record<Exclude<SigningScheme, 'custom'>, Readonly<FormatSource>>> = {
  'standard-webhooks': {
    algorithm: 'sha256',
    encoding: 'base64',
    keyFormat: 'whsec',
    payload: '{id}.{timestamp}.{body}',
    headers: {
      'webhook-id': '{id}',
      'webhook-timestamp': '{timestamp}',
      'webhook-signature': '{signatures}',
    },
    signature: 'v1,{signature}',
    separator: ' ',
  },
  stripe: {
    algorithm: 'sha256',
    encoding: 'hex',
    keyFormat: 'utf8',
    payload: '{timestamp}.{body}',
    headers: { 'Stripe-Signature': 't={timestamp},{signatures}' },
    signature: 'v1={signature}',
    separator: ',',
  },
};

/** Defaults of a custom scheme for the fields it may leave out (payload, headers and signature it may not). */
const CUSTOM_DEFAULTS = {
  algorithm: 'sha256',
  encoding: 'base64',
  keyFormat: 'utf8',
  separator: ' ',
} as const;

/** Text a layout may hold around its placeholders: printable ASCII (it ends up in a header or is signed). */
const LAYOUT_TEXT = /^[\x20-\x7e]*$/;
const PLACEHOLDER = /\{([^{}]*)\}/g;

/** A layout, or the reason it is wrong (for the schema's message). */
export function parseLayout(
  text: string,
  allowed: readonly SigningField[],
  required: SigningField | undefined,
): SigningLayout | string {
  if (text.includes('{{')) {
    return `is a layout, not a {{ }} template: write single-brace placeholders (${placeholders(allowed)})`;
  }
  if (!LAYOUT_TEXT.test(text)) return 'must be printable ASCII (no control characters)';
  const literals: string[] = [];
  const fields: SigningField[] = [];
  let from = 0;
  for (const match of text.matchAll(PLACEHOLDER)) {
    const name = match[1] as string;
    if (!(allowed as readonly string[]).includes(name))
      return `unknown placeholder {${name}} (expected ${placeholders(allowed)})`;
    literals.push(text.slice(from, match.index));
    fields.push(name as SigningField);
    from = match.index + match[0].length;
  }
  literals.push(text.slice(from));
  if (literals.some((literal) => literal.includes('{') || literal.includes('}')))
    return `has an unpaired "{" or "}" (placeholders are ${placeholders(allowed)})`;
  if (required !== undefined) {
    const count = fields.filter((field) => field === required).length;
    if (count !== 1) return `must hold {${required}} exactly once`;
  }
  return { literals, fields };
}

function placeholders(allowed: readonly SigningField[]): string {
  return allowed.map((field) => `{${field}}`).join(', ');
}

/** The scheme's fields: the preset's (none for `custom`) under the file's own. The schema checked them all. */
export function signingFormat(doc: SigningDocument): SigningFormat {
  const scheme = doc.scheme ?? 'standard-webhooks';
  const base: Partial<FormatSource> = scheme === 'custom' ? CUSTOM_DEFAULTS : SIGNING_PRESETS[scheme];
  const pick = <K extends keyof FormatSource>(key: K): FormatSource[K] =>
    (doc[key] ?? base[key]) as FormatSource[K];
  const layout = (text: string, allowed: readonly SigningField[], required?: SigningField): SigningLayout => {
    const parsed = parseLayout(text, allowed, required);
    if (typeof parsed === 'string') throw new Error(`signing layout ${JSON.stringify(text)}: ${parsed}`);
    return parsed;
  };
  return {
    algorithm: pick('algorithm'),
    encoding: pick('encoding'),
    keyFormat: pick('keyFormat'),
    payload: layout(pick('payload'), PAYLOAD_FIELDS, 'body'),
    headers: Object.entries(pick('headers')).map(
      ([name, value]) => [name.toLowerCase(), layout(value, HEADER_FIELDS)] as const,
    ),
    signature: layout(pick('signature'), SIGNATURE_FIELDS, 'signature'),
    separator: pick('separator'),
  };
}

/** The whole `signing:` block checked together (the schema checks each field on its own). */
export function signingProblems(doc: Partial<SigningDocument>): { path: string[]; message: string }[] {
  const problems: { path: string[]; message: string }[] = [];
  const scheme = doc.scheme ?? 'standard-webhooks';
  if (scheme === 'custom') {
    for (const key of ['payload', 'headers', 'signature'] as const) {
      if (doc[key] === undefined) {
        problems.push({
          path: [key],
          message: 'required with scheme: custom (there is no preset to take it from)',
        });
      }
    }
  }
  const preset = scheme === 'custom' ? undefined : SIGNING_PRESETS[scheme];
  const headers = doc.headers ?? preset?.headers;
  const payload = doc.payload ?? preset?.payload;
  if (headers === null || typeof headers !== 'object' || typeof payload !== 'string') return problems;
  const values = Object.values(headers).filter((value) => typeof value === 'string');
  const count = values.reduce((sum, value) => sum + value.split('{signatures}').length - 1, 0);
  if (count !== 1) {
    problems.push({ path: ['headers'], message: 'exactly one header must hold {signatures}, once' });
  }
  // A receiver can only check what it is told: an id or timestamp that is signed must be sent.
  for (const field of ['id', 'timestamp'] as const) {
    if (payload.includes(`{${field}}`) && !values.some((value) => value.includes(`{${field}}`))) {
      problems.push({
        path: ['headers'],
        message: `the payload signs {${field}}, so a header must send it`,
      });
    }
  }
  return problems;
}
