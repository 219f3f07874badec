/**
 * An attempt's spans (docs/operations.md, Tracing): a CONSUMER span `process <service>` per attempt, child of
 * (and linked to) the trace context stored in the job's metadata, and a CLIENT span `<METHOD>` per HTTP call,
 * whose context goes downstream in `traceparent` (through the registered propagator).
 *
 * Nothing here runs without an SDK: `startAttemptTrace` answers undefined after one allocation-free check
 * (core/tracer.ts), and the other helpers pass straight through on undefined.
 *
 * Hostile values: no span holds a secret, a query string or a downstream's text. Names are low-cardinality
 * (service, operation, method: from the services file); the URL is the scrubbed host, port and path only
 * (never url.full: a query can hold an API key); a status message is the already-scrubbed error message.
 */
import {
  type Attributes,
  type Context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';

import { requestedHoldMs } from '../core/delivery-policy.ts';
import { isFerryError } from '../core/errors.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { ServiceConfig } from '../core/services/types.ts';
import { traceContextOfMetadata } from '../core/trace-context.ts';
import { ferryTracer, remoteSpanContext, tracingEnabled } from '../core/tracer.ts';
import type { Scrubber } from '../secrets/scrub.ts';
import { callDownstream, type CallOptions, type CallResponse } from './http/call.ts';
import type { PoolSet } from './http/pools.ts';
import type { OutboundRequest } from './http/request.ts';

/** The ids a traced attempt's log lines carry (pino fields `trace_id`, `span_id`). */
export interface TraceIds {
  traceId: string;
  spanId: string;
}

/** The attempt's consumer span, and the context its client spans start in. */
export interface AttemptTrace {
  readonly span: Span;
  readonly context: Context;
  readonly scrubber: Scrubber;
  /** A sealed job's: its path may hold the opened input, so no span records it. */
  readonly sealed: boolean;
}

/** What an attempt's outcome says to its span: a structural subset of processor.ts's AttemptOutcome. */
type TracedOutcome =
  | { kind: 'completed'; result: { status: number } }
  | { kind: 'failed' | 'held'; error: { type: string; message: string; status?: number | undefined } }
  | { kind: string };

/**
 * The attempt's consumer span, or undefined when no SDK is registered. `job.trace` gets the span's ids when
 * it records (the attempt's log line carries them). Call it once the job's metadata is readable (a sealed
 * job's after opening it, with `sealed` true).
 */
export function startAttemptTrace(
  job: { id: string; attempt?: number | undefined; trace?: TraceIds | undefined },
  service: ServiceConfig,
  operation: string,
  metadata: Readonly<Record<string, unknown>> | undefined,
  scrubber: Scrubber,
  sealed = false,
): AttemptTrace | undefined {
  if (!tracingEnabled()) return undefined;
  const stored = traceContextOfMetadata(metadata);
  const remote = stored === undefined ? undefined : remoteSpanContext(stored);
  // A job without a stored context starts its own trace: whatever context is active in the worker is not its.
  const parent = remote === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, remote);
  const attributes: Attributes = {
    'messaging.system': 'bullmq',
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'process',
    'messaging.destination.name': serviceQueueName(service.name),
    'messaging.message.id': job.id,
    'ferry.service': service.name,
    'ferry.operation': operation,
    'ferry.job.id': job.id,
  };
  if (job.attempt !== undefined) attributes['ferry.attempt'] = job.attempt;
  const links: Link[] | undefined = remote === undefined ? undefined : [{ context: remote }];
  const span = ferryTracer().startSpan(
    `process ${service.name}`,
    { kind: SpanKind.CONSUMER, attributes, ...(links === undefined ? {} : { links }) },
    parent,
  );
  if (span.isRecording()) {
    const { traceId, spanId } = span.spanContext();
    job.trace = { traceId, spanId };
  }
  return { span, context: trace.setSpan(parent, span), scrubber, sealed };
}

/** Ends the attempt's span with its outcome; returns the outcome (so `return endAttemptTrace(t, {...})`). */
export function endAttemptTrace<const O extends TracedOutcome>(
  traced: AttemptTrace | undefined,
  outcome: O,
): O {
  if (traced === undefined) return outcome;
  const { span } = traced;
  if (span.isRecording()) {
    const o = outcome as TracedOutcome;
    if ('result' in o) {
      span.setAttribute('ferry.outcome', 'completed');
      span.setAttribute('http.response.status_code', o.result.status);
    } else if ('error' in o) {
      const { error } = o;
      // A 429/503 with Retry-After holds the service, as the attempt's log line says.
      const held = o.kind === 'held' || (isFerryError(error) && requestedHoldMs(error) !== undefined);
      span.setAttribute('ferry.outcome', held ? 'held' : o.kind);
      span.setAttribute('error.type', error.type);
      if (error.status !== undefined) span.setAttribute('http.response.status_code', error.status);
      // Scrubbed by runAttempt before it returns: the only text of a failure a span holds.
      span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    } else {
      span.setAttribute('ferry.outcome', o.kind);
    }
  }
  span.end();
  return outcome;
}

/**
 * One HTTP call (callDownstream) in a CLIENT span, child of the attempt's span, with the span's context
 * injected into the request's headers. Without a trace, the call as it is, with nothing allocated.
 */
export function tracedCall(
  traced: AttemptTrace | undefined,
  pools: PoolSet,
  request: OutboundRequest,
  options: CallOptions,
): Promise<CallResponse> {
  if (traced === undefined) return callDownstream(pools, request, options);
  const span = ferryTracer().startSpan(
    request.method,
    { kind: SpanKind.CLIENT, attributes: clientAttributes(request, traced) },
    traced.context,
  );
  const headers = { ...request.headers };
  propagation.inject(trace.setSpan(traced.context, span), headers);
  return callDownstream(pools, { ...request, headers }, options).then(
    (response) => {
      span.setAttribute('http.response.status_code', response.status);
      span.end();
      return response;
    },
    (error: unknown) => {
      if (isFerryError(error)) {
        span.setAttribute('error.type', error.type);
        if (error.status !== undefined) span.setAttribute('http.response.status_code', error.status);
      } else {
        span.setAttribute('error.type', '_OTHER');
      }
      // No message: it is scrubbed later, by runAttempt; the attempt's span carries the scrubbed one.
      span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
      throw error;
    },
  );
}

function clientAttributes(request: OutboundRequest, { scrubber, sealed }: AttemptTrace): Attributes {
  const attributes: Attributes = { 'http.request.method': request.method };
  if (!sealed) {
    // The path can hold a secret (a webhook token in it): scrubbed, and never with its query.
    const query = request.path.indexOf('?');
    attributes['url.path'] = scrubber.scrub(query === -1 ? request.path : request.path.slice(0, query));
  }
  try {
    const origin = new URL(request.origin);
    // A baseUrl may come from a secret: its host too is scrubbed.
    attributes['server.address'] = scrubber.scrub(origin.hostname);
    attributes['server.port'] =
      origin.port === '' ? (origin.protocol === 'https:' ? 443 : 80) : Number(origin.port);
    attributes['url.scheme'] = origin.protocol.slice(0, -1);
  } catch {
    // An origin undici would refuse too: the call fails on its own, the span just lacks the address.
  }
  return attributes;
}
