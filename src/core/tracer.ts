/**
 * Ferry's side of OpenTelemetry: `@opentelemetry/api` only, the user brings the SDK (docs/operations.md,
 * Tracing). With no SDK registered Ferry builds no span, context, carrier or attribute object: each enqueue
 * and each attempt first asks `tracingEnabled()`, which reads the global provider and allocates nothing.
 */
import {
  createTraceState,
  ProxyTracerProvider,
  type SpanContext,
  trace,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';

import { formatTraceparent, parseTraceparent, type TraceContext, validTracestate } from './trace-context.ts';

export const TRACER_NAME = 'ferry';

/** The API's no-op provider: what a ProxyTracerProvider delegates to until an SDK registers. */
const NOOP_PROVIDER: TracerProvider = new ProxyTracerProvider().getDelegate();

/**
 * True when an SDK registered a tracer provider. `trace.getTracerProvider()` is the API's proxy, whose
 * delegate is the no-op provider until `trace.setGlobalTracerProvider` runs; a provider of another copy of
 * the API (not a ProxyTracerProvider of this one) counts as registered.
 */
export function tracingEnabled(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegate() !== NOOP_PROVIDER;
}

/** Ferry's tracer; the proxy follows a provider registered (or replaced) later. */
export function ferryTracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

/** A stored trace context as a remote parent span context (what a propagator's extract would give). */
export function remoteSpanContext(context: TraceContext): SpanContext | undefined {
  const parsed = parseTraceparent(context.traceparent);
  if (parsed === undefined) return undefined;
  const spanContext: SpanContext = {
    traceId: parsed.traceId,
    spanId: parsed.spanId,
    traceFlags: parsed.flags,
    isRemote: true,
  };
  if (context.tracestate !== undefined) spanContext.traceState = createTraceState(context.tracestate);
  return spanContext;
}

/** A span's context in the W3C form Ferry stores in job metadata. */
export function traceContextOfSpan(spanContext: SpanContext): TraceContext {
  const traceparent = formatTraceparent({
    traceId: spanContext.traceId,
    spanId: spanContext.spanId,
    flags: spanContext.traceFlags,
  });
  const tracestate = validTracestate(spanContext.traceState?.serialize());
  return tracestate === undefined ? { traceparent } : { traceparent, tracestate };
}
