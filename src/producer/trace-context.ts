/**
 * The enqueue side of tracing: each job's trace context goes into its `metadata.traceparent` /
 * `metadata.tracestate` (core/trace-context.ts), where the worker's consumer span finds its parent.
 *
 * With an SDK registered, each job gets a PRODUCER span `send <service>` (messaging semantic conventions),
 * child of the job's own `metadata.traceparent` when the request has one (it wins), else of the active span,
 * else of the context the caller passed (the API's request headers); the job then stores the send span's
 * context. With no SDK, nothing is built, and only a context the caller passed is stored.
 */
import {
  type Context,
  context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';

import type { EnqueueRequest } from '../core/job.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import { type TraceContext, traceContextOfMetadata, withTraceContext } from '../core/trace-context.ts';
import { ferryTracer, remoteSpanContext, traceContextOfSpan, tracingEnabled } from '../core/tracer.ts';

export interface EnqueueTracing {
  /** Per request (same order): the metadata to store. */
  metadata: (Record<string, unknown> | undefined)[];
  /** Per request: its send span, when an SDK is registered. */
  spans: Span[] | undefined;
}

/**
 * The metadata to store for each request, with its send span; undefined when there is nothing to do (no SDK
 * and no context given): the caller then stores the requests' metadata as they are.
 */
export function startEnqueueTracing(
  requests: readonly EnqueueRequest[],
  given: TraceContext | undefined,
): EnqueueTracing | undefined {
  if (!tracingEnabled()) {
    if (given === undefined) return undefined;
    return {
      metadata: requests.map((request) => withTraceContext(request.metadata, given)),
      spans: undefined,
    };
  }
  const tracer = ferryTracer();
  const active = context.active();
  // An HTTP server instrumentation already continued the headers' trace: its span is the better parent.
  const fallback =
    trace.getSpan(active) !== undefined || given === undefined ? active : parentOf(given, active);
  const spans: Span[] = [];
  const metadata = requests.map((request) => {
    const own = traceContextOfMetadata(request.metadata);
    const parent = own === undefined ? fallback : parentOf(own, ROOT_CONTEXT);
    const queue = serviceQueueName(request.service);
    const span = tracer.startSpan(
      `send ${request.service}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          'messaging.system': 'bullmq',
          'messaging.operation.type': 'send',
          'messaging.operation.name': 'send',
          'messaging.destination.name': queue,
          'ferry.service': request.service,
          'ferry.operation': request.operation,
        },
      },
      parent,
    );
    spans.push(span);
    const spanContext = span.spanContext();
    if (!trace.isSpanContextValid(spanContext)) return withTraceContext(request.metadata, own ?? given);
    // Replaces a body's own traceparent: the send span is its child, so the trace is the same one.
    return { ...request.metadata, ...traceContextOfSpan(spanContext) };
  });
  return { metadata, spans };
}

/** Ends the send spans: with each job's id, or with the add's failure (its type only: no message). */
export function endEnqueueTracing(
  tracing: EnqueueTracing | undefined,
  ids: readonly (string | undefined)[] | undefined,
  error?: unknown,
): void {
  if (tracing?.spans === undefined) return;
  tracing.spans.forEach((span, i) => {
    const id = ids?.[i];
    if (id !== undefined) span.setAttribute('messaging.message.id', id);
    if (error !== undefined) {
      span.setAttribute('error.type', errorType(error));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  });
}

function parentOf(given: TraceContext, base: Context): Context {
  const spanContext = remoteSpanContext(given);
  return spanContext === undefined ? base : trace.setSpanContext(base, spanContext);
}

function errorType(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const type = (error as { type?: unknown }).type;
    if (typeof type === 'string') return type;
    if (error instanceof Error) return error.name;
  }
  return '_OTHER';
}
