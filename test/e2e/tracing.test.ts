/**
 * Issue 17 item 4, end to end: OpenTelemetry traces from the enqueue to the downstream request. A real
 * redis-server, a real worker pool, the real API over HTTP and a real downstream on 127.0.0.1; the SDK is the
 * test's (sdk-trace-base's BasicTracerProvider with an in-memory exporter, the AsyncLocalStorage context
 * manager and the W3C propagator), registered for the SDK tests only and unregistered after them, so the
 * first tests (and every other test file) run with none.
 */
import { randomBytes } from 'node:crypto';

import { context, propagation, type SpanContext, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { parseKeyring } from '../../src/secrets/crypto.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService, type TestFerry } from '../helpers/ferry.ts';
import { rawJobs } from '../helpers/raw-jobs.ts';
import { startRedis } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

async function ferryWith(
  downstream: Downstream,
  overrides: Record<string, unknown> = {},
): Promise<TestFerry> {
  return createTestFerry(redis, { services: oneService(downstream.url, overrides) });
}

/** The worker's attempt log line of a job, parsed. */
function attemptLine(ferry: TestFerry, jobId: string, attempt = 1): Record<string, unknown> | undefined {
  return ferry.logs
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .find((line) => line.jobId === jobId && line.attempt === attempt && typeof line.outcome === 'string');
}

describe('with no SDK registered', () => {
  it('sends no traceparent downstream, and stores a valid traceparent header as the job metadata', async () => {
    expect(trace.getTracerProvider().getTracer('probe').startSpan('probe').isRecording()).toBe(false);
    const downstream = await startDownstream();
    const ferry = await ferryWith(downstream);
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
    const traceparent = `00-${randomHex(16)}-${randomHex(8)}-01`;
    const fromApi = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: { service: 'svc', operation: 'create', input: { via: 'api' } },
      headers: { traceparent, tracestate: 'vendor=abc' },
    });
    expect(fromApi.status).toBe(202);
    const fromProducer = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { via: 'producer' },
    });
    const [apiJob, producerJob] = await Promise.all([
      ferry.producer.waitFor('svc', fromApi.body.id as string, { timeoutMs: 10_000 }),
      ferry.producer.waitFor('svc', fromProducer.id, { timeoutMs: 10_000 }),
    ]);
    expect(apiJob.state).toBe('completed');
    expect(producerJob.state).toBe('completed');
    expect(apiJob.metadata).toEqual({ traceparent, tracestate: 'vendor=abc' });
    expect(producerJob.metadata).toBeUndefined();
    expect(downstream.requests).toHaveLength(2);
    for (const request of downstream.requests) {
      expect(request.headers.traceparent).toBeUndefined();
      expect(request.headers.tracestate).toBeUndefined();
    }
    expect(attemptLine(ferry, fromProducer.id)).not.toHaveProperty('trace_id');
    await api.close();
    await downstream.close();
  });
});

describe('with an SDK registered', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const contextManager = new AsyncLocalStorageContextManager();

  beforeAll(() => {
    trace.setGlobalTracerProvider(provider);
    context.setGlobalContextManager(contextManager.enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  });
  afterAll(async () => {
    trace.disable();
    context.disable();
    propagation.disable();
    await provider.shutdown();
  });
  beforeEach(() => exporter.reset());

  const spans = (): ReadableSpan[] => exporter.getFinishedSpans();
  const byKind = (kind: SpanKind, traceId: string): ReadableSpan[] =>
    spans().filter((span) => span.kind === kind && span.spanContext().traceId === traceId);
  const parentOf = (span: ReadableSpan): SpanContext | undefined => span.parentSpanContext;

  /** Waits until the trace has `count` spans of `kind` (SimpleSpanProcessor exports each as it ends). */
  async function spansOf(kind: SpanKind, traceId: string, count: number): Promise<ReadableSpan[]> {
    await waitUntil(
      () => byKind(kind, traceId).length >= count,
      10_000,
      `${count} span(s) of kind ${kind} in trace ${traceId}`,
    );
    return byKind(kind, traceId).sort(
      (a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1],
    );
  }

  it('one trace runs from Producer.enqueue (the active span) to the downstream, which gets its trace id', async () => {
    const downstream = await startDownstream();
    const ferry = await ferryWith(downstream);
    const tracer = trace.getTracer('test');
    const { job, root } = await tracer.startActiveSpan('checkout', async (span) => {
      try {
        const added = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { a: 1 } });
        return { job: added, root: span.spanContext() };
      } finally {
        span.end();
      }
    });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    const { traceId } = root;

    const [send] = await spansOf(SpanKind.PRODUCER, traceId, 1);
    expect(send!.name).toBe('send svc');
    expect(parentOf(send!)?.spanId).toBe(root.spanId);
    expect(send!.attributes).toMatchObject({
      'messaging.system': 'bullmq',
      'messaging.destination.name': '{svc}',
      'messaging.message.id': job.id,
      'ferry.service': 'svc',
      'ferry.operation': 'create',
    });
    // The job stores the send span's context: the consumer's parent.
    expect(view.metadata?.traceparent).toBe(`00-${traceId}-${send!.spanContext().spanId}-01`);

    const [consumer] = await spansOf(SpanKind.CONSUMER, traceId, 1);
    expect(consumer!.name).toBe('process svc');
    expect(parentOf(consumer!)?.spanId).toBe(send!.spanContext().spanId);
    expect(consumer!.links.map((link) => link.context.spanId)).toEqual([send!.spanContext().spanId]);
    expect(consumer!.attributes).toMatchObject({
      'messaging.system': 'bullmq',
      'messaging.destination.name': '{svc}',
      'ferry.service': 'svc',
      'ferry.operation': 'create',
      'ferry.attempt': 1,
      'ferry.job.id': job.id,
      'ferry.outcome': 'completed',
      'http.response.status_code': 200,
    });
    expect(consumer!.status.code).not.toBe(SpanStatusCode.ERROR);

    const [client] = await spansOf(SpanKind.CLIENT, traceId, 1);
    expect(client!.name).toBe('POST');
    expect(parentOf(client!)?.spanId).toBe(consumer!.spanContext().spanId);
    expect(client!.attributes).toMatchObject({
      'http.request.method': 'POST',
      'server.address': '127.0.0.1',
      'server.port': Number(new URL(downstream.url).port),
      'url.path': '/things',
      'http.response.status_code': 200,
    });

    // The downstream saw the client span as the parent of its work: the same trace id.
    expect(downstream.requests).toHaveLength(1);
    const sent = TRACEPARENT.exec(String(downstream.requests[0]!.headers.traceparent));
    expect(sent?.[1]).toBe(traceId);
    expect(sent?.[2]).toBe(client!.spanContext().spanId);

    // The attempt's log line carries the consumer span's ids.
    expect(attemptLine(ferry, job.id)).toMatchObject({
      trace_id: traceId,
      span_id: consumer!.spanContext().spanId,
    });
    await downstream.close();
  });

  it('POST /v1/jobs and /v1/jobs/batch continue the traceparent header; a body traceparent wins', async () => {
    const downstream = await startDownstream();
    const ferry = await ferryWith(downstream);
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
    const headerTrace = randomHex(16);
    const headerSpan = randomHex(8);
    const headers = { traceparent: `00-${headerTrace}-${headerSpan}-01`, tracestate: 'vendor=abc' };
    const one = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: { service: 'svc', operation: 'create', input: { via: 'one' } },
      headers,
    });
    expect(one.status).toBe(202);
    const bodyTrace = randomHex(16);
    const bodySpan = randomHex(8);
    const batch = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: {
        jobs: [
          { service: 'svc', operation: 'create', input: { via: 'batch' } },
          {
            service: 'svc',
            operation: 'create',
            input: { via: 'body' },
            metadata: { traceparent: `00-${bodyTrace}-${bodySpan}-01`, order: 7 },
          },
        ],
      },
      headers,
    });
    expect(batch.status).toBe(200);
    expect(batch.body.accepted).toBe(2);
    const ids = [
      one.body.id as string,
      batch.body.results[0].id as string,
      batch.body.results[1].id as string,
    ];
    const views = await Promise.all(
      ids.map((id) => ferry.producer.waitFor('svc', id, { timeoutMs: 10_000 })),
    );
    expect(views.map((view) => view.state)).toEqual(['completed', 'completed', 'completed']);

    const sends = await spansOf(SpanKind.PRODUCER, headerTrace, 2);
    for (const send of sends) {
      expect(parentOf(send)?.spanId).toBe(headerSpan);
      expect(parentOf(send)?.isRemote).toBe(true);
    }
    const [bodySend] = await spansOf(SpanKind.PRODUCER, bodyTrace, 1);
    expect(parentOf(bodySend!)?.spanId).toBe(bodySpan);
    // The body's other metadata is kept.
    expect(views[2]!.metadata).toMatchObject({ order: 7 });

    await spansOf(SpanKind.CLIENT, headerTrace, 2);
    await spansOf(SpanKind.CLIENT, bodyTrace, 1);
    const sentTraces = downstream.requests.map((request) => {
      const via = (JSON.parse(request.body) as { via: string }).via;
      return [via, TRACEPARENT.exec(String(request.headers.traceparent))?.[1], request.headers.tracestate];
    });
    expect(sentTraces.sort()).toEqual(
      [
        ['batch', headerTrace, 'vendor=abc'],
        ['body', bodyTrace, undefined],
        ['one', headerTrace, 'vendor=abc'],
      ].sort(),
    );
    await api.close();
    await downstream.close();
  });

  it('a retry makes two consumer spans in the same trace, attempts 1 and 2', async () => {
    const downstream = await startDownstream((_request, index) =>
      index === 0 ? { status: 500, body: { error: 'boom' } } : { status: 200, body: { ok: true } },
    );
    const ferry = await ferryWith(downstream);
    const tracer = trace.getTracer('test');
    const { job, traceId } = await tracer.startActiveSpan('root', async (span) => {
      try {
        const added = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
        return { job: added, traceId: span.spanContext().traceId };
      } finally {
        span.end();
      }
    });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    const consumers = await spansOf(SpanKind.CONSUMER, traceId, 2);
    expect(consumers.map((span) => span.attributes['ferry.attempt'])).toEqual([1, 2]);
    const [first, second] = consumers;
    expect(first!.attributes).toMatchObject({
      'ferry.outcome': 'failed',
      'error.type': 'ServerError',
      'http.response.status_code': 500,
    });
    expect(first!.status.code).toBe(SpanStatusCode.ERROR);
    expect(first!.status.message).toContain('500');
    expect(second!.attributes).toMatchObject({
      'ferry.outcome': 'completed',
      'http.response.status_code': 200,
    });
    // Both attempts are children of the same send span.
    expect(new Set(consumers.map((span) => parentOf(span)?.spanId)).size).toBe(1);
    const clients = await spansOf(SpanKind.CLIENT, traceId, 2);
    expect(clients[0]!.status.code).toBe(SpanStatusCode.ERROR);
    expect(clients[0]!.attributes['http.response.status_code']).toBe(500);
    const sent = downstream.requests.map((request) => TRACEPARENT.exec(String(request.headers.traceparent)));
    expect(sent.map((match) => match?.[1])).toEqual([traceId, traceId]);
    expect(sent.map((match) => match?.[2])).toEqual(clients.map((span) => span.spanContext().spanId));
    await downstream.close();
  });

  it('a malformed traceparent header is ignored and the job accepted', async () => {
    const downstream = await startDownstream();
    const ferry = await ferryWith(downstream);
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
    const id = randomHex(16);
    const span = randomHex(8);
    const malformed = [
      'garbage',
      `00-${id.toUpperCase()}-${span}-01`,
      `00-${'0'.repeat(32)}-${span}-01`,
      `00-${id}-${'0'.repeat(16)}-01`,
      `ff-${id}-${span}-01`,
      `00-${id}-${span}-01-extra`,
      `00-${id}-${span}-01`.padEnd(10_000, 'x'),
    ];
    for (const traceparent of malformed) {
      const answer = await api.request('POST', '/v1/jobs', {
        token: TOKENS.writer,
        body: { service: 'svc', operation: 'create', input: {} },
        headers: { traceparent, tracestate: 'vendor=abc' },
      });
      expect(answer.status, traceparent.slice(0, 80)).toBe(202);
      const view = await ferry.producer.waitFor('svc', answer.body.id as string, { timeoutMs: 10_000 });
      expect(view.state).toBe('completed');
      // The job started a trace of its own: its send span has no parent, and nothing of the header is kept.
      const stored = TRACEPARENT.exec(String(view.metadata?.traceparent));
      expect(stored?.[1]).toBeDefined();
      expect(stored?.[1]).not.toBe(id);
      expect(view.metadata?.tracestate).toBeUndefined();
      const [send] = await spansOf(SpanKind.PRODUCER, stored![1]!, 1);
      expect(parentOf(send!)).toBeUndefined();
    }
    // A valid traceparent with a malformed tracestate keeps the traceparent only.
    const answer = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: { service: 'svc', operation: 'create', input: {} },
      headers: { traceparent: `00-${id}-${span}-01`, tracestate: 'Bad Key=1' },
    });
    expect(answer.status).toBe(202);
    const view = await ferry.producer.waitFor('svc', answer.body.id as string, { timeoutMs: 10_000 });
    expect(TRACEPARENT.exec(String(view.metadata?.traceparent))?.[1]).toBe(id);
    expect(view.metadata?.tracestate).toBeUndefined();
    await api.close();
    await downstream.close();
  });

  it('puts no secret in any span: not the path, query, host or an echoed error', async () => {
    const PATH_TOKEN = `hook-${randomHex(12)}`;
    const KEY = `k3y!'()~ +/=${randomHex(9)}`;
    const downstream = await startDownstream((request, index) =>
      // An error page echoing the URL, API key and path token included, then a success.
      index === 0
        ? { status: 422, body: `no route for ${request.url} (${decodeURIComponent(request.url)})` }
        : { status: 200, body: { ok: true } },
    );
    const env = { FERRY_SECRET_HOOK_TOKEN: PATH_TOKEN, FERRY_SECRET_API_KEY: KEY };
    const ferry = await createTestFerry(redis, {
      env,
      services: oneService(downstream.url, {
        auth: { type: 'apiKey', query: 'api_key', value: '{{ secrets.api_key }}' },
        operations: {
          create: { method: 'POST', path: '/hooks/{{ secrets.hook_token }}', body: '{{ input }}' },
        },
      }),
    });
    const jobs = [
      await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } }),
      await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 2 } }),
    ];
    const views = await Promise.all(
      jobs.map((job) => ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 })),
    );
    expect(views.map((view) => view.state).sort()).toEqual(['completed', 'dead_lettered']);
    // The downstream really received both secrets.
    expect(downstream.requests[0]!.url).toContain(`/hooks/${PATH_TOKEN}?api_key=`);
    await waitUntil(
      () => spans().filter((span) => span.kind === SpanKind.CONSUMER).length === 2,
      10_000,
      'two consumer spans',
    );
    const failed = spans().find((span) => span.attributes['ferry.outcome'] === 'failed')!;
    expect(failed.status.code).toBe(SpanStatusCode.ERROR);
    expect(failed.status.message).toContain('422');
    // The dead-letter log line names the attempt's span too.
    const deadLettered = ferry.logs
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((line) => line.msg === 'job dead-lettered');
    expect(deadLettered).toMatchObject({
      trace_id: failed.spanContext().traceId,
      span_id: failed.spanContext().spanId,
    });
    const places: Record<string, string> = {};
    spans().forEach((span, i) => {
      places[`span ${i} (${span.name})`] = JSON.stringify({
        name: span.name,
        attributes: span.attributes,
        events: span.events,
        status: span.status,
        links: span.links,
        resource: span.resource.attributes,
      });
    });
    expect(Object.keys(places).length).toBeGreaterThanOrEqual(6);
    // The client spans name the path, scrubbed, and never the query (nor url.full).
    const clients = spans().filter((span) => span.kind === SpanKind.CLIENT);
    expect(clients.map((span) => span.attributes['url.path'])).toEqual([
      '/hooks/[redacted]',
      '/hooks/[redacted]',
    ]);
    for (const span of clients) expect(span.attributes).not.toHaveProperty('url.full');
    const hits = [
      ...findSecretForms('path token', secretForms(PATH_TOKEN), places),
      ...findSecretForms('API key', secretForms(KEY), places),
    ];
    expect(hits).toEqual([]);
    await downstream.close();
  });

  it("puts no sealed input in any span: a sensitive operation's path is not recorded", async () => {
    const EMAIL = `person.${randomHex(8)}@example.com`;
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      pool: { keyring: parseKeyring(`k1:${randomBytes(32).toString('base64')}`) },
      services: oneService(downstream.url, {
        sensitive: true,
        operations: { lookup: { method: 'GET', path: '/people/{{ input.email }}' } },
      }),
    });
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'lookup',
      input: { email: EMAIL },
    });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    // The downstream got the opened input in its path.
    expect(decodeURIComponent(downstream.requests[0]!.url)).toBe(`/people/${EMAIL}`);
    await waitUntil(() => spans().some((span) => span.kind === SpanKind.CLIENT), 10_000, 'the client span');
    const client = spans().find((span) => span.kind === SpanKind.CLIENT)!;
    expect(client.attributes['http.request.method']).toBe('GET');
    expect(client.attributes).not.toHaveProperty('url.path');
    const places: Record<string, string> = {};
    spans().forEach((span, i) => {
      places[`span ${i} (${span.name})`] = JSON.stringify({
        name: span.name,
        attributes: span.attributes,
        events: span.events,
        status: span.status,
      });
    });
    expect(findSecretForms('sealed input', secretForms(EMAIL), places)).toEqual([]);
    await downstream.close();
  });

  it("an attempt that fails before its call (a refused job) is a span too, in its producer's trace", async () => {
    const downstream = await startDownstream();
    const ferry = await ferryWith(downstream, { tenantSecrets: 'required' });
    const traceId = randomHex(16);
    // A raw producer's job without the tenant the service requires: refused at run time, no call.
    const raw = rawJobs(redis.url, ferry.prefix);
    const jobId = await raw.add('svc', 'create', {
      input: { n: 1 },
      metadata: { traceparent: `00-${traceId}-${randomHex(8)}-01` },
    });
    const view = await ferry.producer.waitFor('svc', jobId, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe('ValidationError');
    const [span] = await spansOf(SpanKind.CONSUMER, traceId, 1);
    expect(span!.attributes).toMatchObject({
      'ferry.outcome': 'failed',
      'error.type': 'ValidationError',
      'ferry.attempt': 1,
    });
    expect(span!.status.code).toBe(SpanStatusCode.ERROR);
    expect(attemptLine(ferry, jobId)).toMatchObject({
      trace_id: traceId,
      span_id: span!.spanContext().spanId,
    });
    expect(downstream.requests).toHaveLength(0);
    await downstream.close();
  });

  it("continues a POST /v1/jobs traceparent through a sealed job's envelope to the downstream", async () => {
    const downstream = await startDownstream();
    const secretsKey = `k1:${randomBytes(32).toString('base64')}`;
    const ferry = await createTestFerry(redis, {
      pool: { keyring: parseKeyring(secretsKey) },
      services: oneService(downstream.url, { sensitive: true }),
    });
    const api = await startTestApi({
      redisUrl: redis.url,
      prefix: ferry.prefix,
      config: ferry.config,
      secretsKey,
    });
    const traceId = randomHex(16);
    const answer = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: { service: 'svc', operation: 'create', input: { via: 'api' } },
      headers: { traceparent: `00-${traceId}-${randomHex(8)}-01` },
    });
    expect(answer.status).toBe(202);
    const view = await ferry.producer.waitFor('svc', answer.body.id as string, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    // Stored sealed: the trace context is in the envelope, not in plaintext metadata.
    expect(view.sealed).toBe(true);
    expect(view.metadata).toBeUndefined();
    const [consumer] = await spansOf(SpanKind.CONSUMER, traceId, 1);
    expect(consumer!.attributes['ferry.outcome']).toBe('completed');
    expect(TRACEPARENT.exec(String(downstream.requests[0]!.headers.traceparent))?.[1]).toBe(traceId);
    await api.close();
    await downstream.close();
  });
});
