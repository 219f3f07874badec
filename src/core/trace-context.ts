/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) as Ferry stores it: `metadata.traceparent` and
 * `metadata.tracestate` of a job (DESIGN §3: a raw BullMQ producer in any language can set them too). Pure
 * string checks, no OpenTelemetry: a value from a request header or from job data is untrusted, so it is kept
 * only when it has the exact W3C form, and bounded.
 */

/** `version-traceid-parentid-flags`, lower-case hex; version ff and all-zero ids are invalid. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);
/** A traceparent of version 00 is exactly this long; later versions may append fields (ignored here). */
export const TRACEPARENT_LENGTH = 55;
/** W3C: a tracestate may be cut to 512 characters; Ferry drops a longer one instead of cutting it. */
export const MAX_TRACESTATE_LENGTH = 512;
const MAX_TRACESTATE_MEMBERS = 32;
const TRACESTATE_MEMBER =
  /^(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/;

export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}

export interface ParsedTraceparent {
  traceId: string;
  spanId: string;
  /** The trace-flags byte (bit 0: sampled). */
  flags: number;
}

/**
 * The ids of a valid traceparent, or undefined. A later version's longer value is read by its version-00
 * prefix, as W3C asks; anything else malformed is undefined.
 */
export function parseTraceparent(value: unknown): ParsedTraceparent | undefined {
  if (typeof value !== 'string' || value.length < TRACEPARENT_LENGTH) return undefined;
  let text = value;
  if (value.length > TRACEPARENT_LENGTH) {
    // Only a version above 00 may be longer, and only with a `-` after the flags; bounded like a tracestate.
    if (value.startsWith('00') || value.length > MAX_TRACESTATE_LENGTH || value[TRACEPARENT_LENGTH] !== '-')
      return undefined;
    text = value.slice(0, TRACEPARENT_LENGTH);
  }
  const match = TRACEPARENT.exec(text);
  if (match === null) return undefined;
  const [, version, traceId, spanId, flags] = match as unknown as [string, string, string, string, string];
  if (version === 'ff' || traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined;
  return { traceId, spanId, flags: Number.parseInt(flags, 16) };
}

/** A valid traceparent, as version 00 (a later version's extra fields dropped), or undefined. */
export function validTraceparent(value: unknown): string | undefined {
  const parsed = parseTraceparent(value);
  return parsed === undefined ? undefined : formatTraceparent(parsed);
}

export function formatTraceparent(parsed: ParsedTraceparent): string {
  return `00-${parsed.traceId}-${parsed.spanId}-${(parsed.flags & 0xff).toString(16).padStart(2, '0')}`;
}

/**
 * A valid tracestate with its optional whitespace around members removed, or undefined: at most 512
 * characters and 32 members of the W3C grammar, no key twice. Empty members are allowed and dropped.
 */
export function validTracestate(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > MAX_TRACESTATE_LENGTH) return undefined;
  const members: string[] = [];
  const keys = new Set<string>();
  for (const raw of value.split(',')) {
    const member = raw.trim();
    if (member === '') continue;
    if (!TRACESTATE_MEMBER.test(member)) return undefined;
    const key = member.slice(0, member.indexOf('='));
    if (keys.has(key)) return undefined;
    keys.add(key);
    members.push(member);
  }
  if (members.length === 0 || members.length > MAX_TRACESTATE_MEMBERS) return undefined;
  return members.join(',');
}

/**
 * The trace context of request headers (Node's IncomingHttpHeaders shape), or undefined when there is no valid
 * `traceparent`. Two `traceparent` headers are invalid (W3C); several `tracestate` headers are one list. A
 * malformed tracestate is dropped, the traceparent kept.
 */
export function traceContextOfHeaders(
  headers: Record<string, string | string[] | undefined>,
): TraceContext | undefined {
  const traceparent = validTraceparent(headers.traceparent);
  if (traceparent === undefined) return undefined;
  const raw = headers.tracestate;
  const tracestate = validTracestate(Array.isArray(raw) ? raw.join(',') : raw);
  return tracestate === undefined ? { traceparent } : { traceparent, tracestate };
}

/**
 * The trace context a job's metadata holds, or undefined when its traceparent is missing or malformed (the
 * metadata is anyone's to write). A malformed tracestate is dropped.
 */
export function traceContextOfMetadata(
  metadata: Readonly<Record<string, unknown>> | undefined,
): TraceContext | undefined {
  if (metadata === undefined) return undefined;
  const traceparent = validTraceparent(metadata.traceparent);
  if (traceparent === undefined) return undefined;
  const tracestate = validTracestate(metadata.tracestate);
  return tracestate === undefined ? { traceparent } : { traceparent, tracestate };
}

/**
 * Metadata with a request's trace context added. The metadata's own `traceparent` wins over the headers
 * (with its own tracestate, or none); without a context, the metadata is returned as it was.
 */
export function withTraceContext(
  metadata: Record<string, unknown> | undefined,
  trace: TraceContext | undefined,
): Record<string, unknown> | undefined {
  if (trace === undefined || metadata?.traceparent !== undefined) return metadata;
  return { ...metadata, ...trace };
}
