/**
 * Signs one outgoing request (issue 17, docs/services-file.md § Signing): HMAC of the exact body the request
 * sends, with each key that renders, into the headers of the operation's scheme. Called once per attempt after
 * the request is built, so the timestamp is the attempt's and the body is the string undici sends (a string
 * body goes out as its UTF-8 bytes, the bytes signed here).
 */
import { createHash, createHmac } from 'node:crypto';

import { ConfigurationError } from '../../core/errors.ts';
import type { CompiledSigning, SigningKeyFormat, SigningLayout } from '../../core/services/signing.ts';
import type { TemplateContext } from '../../core/services/types.ts';
import type { OutboundRequest } from './request.ts';

/**
 * An idempotency key used as the `{id}` as it is. Standard Webhooks signs `id.timestamp.body`, so an id with a
 * `.` (or a space, a comma: separators of other layouts) would let a producer who chooses its key shift text
 * between the signed fields; such a key is replaced by a digest of itself, still the same on every attempt.
 */
const PLAIN_ID = /^[A-Za-z0-9_:-]{1,200}$/;

/** The `{id}` of a job: its idempotency key (what `Idempotency-Key` carries), or `msg_` + a digest of it. */
export function signingId(idempotencyKey: string): string {
  if (PLAIN_ID.test(idempotencyKey)) return idempotencyKey;
  return `msg_${createHash('sha256').update(idempotencyKey).digest('base64url').slice(0, 32)}`;
}

/**
 * Key bytes by format and rendered value: decoding (and checking) a `whsec_` key once per distinct value rather
 * than per job. Bounded: a per-tenant key has as many values as tenants.
 */
const keyBytes = new Map<string, Buffer | string>();
const MAX_KEYS = 1_000;
/** Standard base64, padded or not: Buffer.from(…, 'base64') would silently skip anything else. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;
const WHSEC_PREFIX = 'whsec_';

/** The key's bytes, or a reason (without the value) why the text is not a key of this format. */
function keyOf(format: SigningKeyFormat, text: string): Buffer | string {
  const cacheKey = `${format}:${text}`;
  let bytes = keyBytes.get(cacheKey);
  if (bytes === undefined) {
    if (format === 'utf8') bytes = Buffer.from(text, 'utf8');
    else {
      const encoded = text.startsWith(WHSEC_PREFIX) ? text.slice(WHSEC_PREFIX.length) : text;
      bytes =
        encoded === '' || !BASE64.test(encoded)
          ? 'is not a whsec_ key (whsec_ then base64; use keyFormat: utf8 for a key used as text)'
          : Buffer.from(encoded, 'base64');
    }
    if (keyBytes.size >= MAX_KEYS) keyBytes.clear();
    keyBytes.set(cacheKey, bytes);
  }
  return bytes;
}

/**
 * Adds the scheme's headers to `request` (built for this attempt alone, so changed in place) and returns it.
 * Throws ConfigurationError when no key renders or one is not a key of its format; the message names the key's
 * template, never its value.
 */
export function signRequest(
  signing: CompiledSigning,
  request: OutboundRequest,
  context: TemplateContext,
  nowMs: number,
): OutboundRequest {
  const { format } = signing;
  const keys: Buffer[] = [];
  for (let i = 0; i < signing.keys.length; i++) {
    const template = signing.keys[i]!;
    const rendered = template.render(context);
    const text = typeof rendered === 'string' ? rendered : rendered == null ? '' : String(rendered);
    // An emptied secret retires its key (docs/operations.md § Rotating a signing key).
    if (text.trim() === '') continue;
    const key = keyOf(format.keyFormat, text);
    if (typeof key === 'string') {
      throw new ConfigurationError(`signing.keys[${i}] (${template.source}) ${key}`, {
        field: `signing.keys[${i}]`,
      });
    }
    keys.push(key);
  }
  if (keys.length === 0) {
    throw new ConfigurationError(
      `signing: every key rendered empty (${signing.keys.map((key) => key.source).join(', ')}); at least one ` +
        'must hold a key',
      { field: 'signing.keys' },
    );
  }
  const values = {
    id: signingId(context.job.idempotencyKey),
    timestamp: String(Math.floor(nowMs / 1000)),
    body: request.body ?? '',
    signature: '',
    signatures: '',
  };
  const payload = Buffer.from(fill(format.payload, values), 'utf8');
  let signatures = '';
  for (let i = 0; i < keys.length; i++) {
    values.signature = createHmac(format.algorithm, keys[i]!).update(payload).digest(format.encoding);
    signatures += (i === 0 ? '' : format.separator) + fill(format.signature, values);
  }
  values.signatures = signatures;
  for (const [name, layout] of format.headers) request.headers[name] = fill(layout, values);
  return request;
}

function fill(
  layout: SigningLayout,
  values: Readonly<Record<SigningLayout['fields'][number], string>>,
): string {
  const { literals, fields } = layout;
  let out = literals[0]!;
  for (let i = 0; i < fields.length; i++) out += values[fields[i]!] + literals[i + 1]!;
  return out;
}
