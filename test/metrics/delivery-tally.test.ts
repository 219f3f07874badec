/** The hot-path tally behind the delivery series: bucket edges, which events count where, detaching. */
import { EventEmitter } from 'node:events';

import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';

import type { DeliveryEventMap } from '../../src/core/delivery-events.ts';
import { DeliveryTally, DurationTally, UNKNOWN_OPERATION } from '../../src/metrics/delivery-tally.ts';
import { ATTEMPT_DURATION_BUCKETS_SECONDS } from '../../src/metrics/metrics.ts';
import { TalliedHistogram } from '../../src/metrics/tallied-histogram.ts';
import { Scrape } from './support.ts';

const BOUNDS_MS = Float64Array.from(ATTEMPT_DURATION_BUCKETS_SECONDS, (seconds) => seconds * 1000);
const base = { service: 'svc', operation: 'create', jobId: '1', tenant: undefined, attempt: 1 };

describe('DurationTally', () => {
  // Prometheus buckets are `le`: an observation equal to a bound belongs to that bound's bucket.
  it.each([
    [0, 0],
    [5, 0],
    [5.001, 1],
    [10, 1],
    [999, 7],
    [1000, 7],
    [60_000, 12],
    [60_001, 13],
    [3_600_000, 13],
  ])('%d ms goes to slot %d', (ms, slot) => {
    const tally = new DurationTally(BOUNDS_MS);
    tally.observe(ms);
    expect([...tally.counts].indexOf(1)).toBe(slot);
    expect(tally.count).toBe(1);
    expect(tally.sumMs).toBe(ms);
  });
});

describe('DeliveryTally', () => {
  function setup(): { tally: DeliveryTally; events: EventEmitter; detach: () => void } {
    const tally = new DeliveryTally(
      [{ name: 'svc', operations: ['create'] }],
      ATTEMPT_DURATION_BUCKETS_SECONDS,
    );
    const events = new EventEmitter();
    return { tally, events, detach: tally.observe(events) };
  }

  it('counts routed jobs per fallback, from 0 for the configured one', () => {
    const tally = new DeliveryTally(
      [
        { name: 'svc', operations: ['create'], fallback: 'backup' },
        { name: 'plain', operations: ['create'] },
      ],
      ATTEMPT_DURATION_BUCKETS_SECONDS,
    );
    const events = new EventEmitter();
    const detach = tally.observe(events);
    const [svc, plain] = [...tally.services()];
    expect([...svc!.routedJobs]).toEqual([['backup', 0]]);
    expect([...plain!.routedJobs]).toEqual([]);
    const routedTo = { service: 'backup', jobId: 'idem-x' };
    const result = { status: 0, headers: {}, body: null, durationMs: 0, attempts: 0, routedTo };
    events.emit('job:fallback:routed', { ...base, fallback: 'backup', routedTo, result });
    events.emit('job:fallback:routed', { ...base, fallback: 'backup', routedTo, result });
    events.emit('job:fallback:routed', { ...base, service: 'unknown', fallback: 'backup', routedTo, result });
    expect([...svc!.routedJobs]).toEqual([['backup', 2]]);
    // A route is no attempt and no finished job of the routed service.
    expect(svc!.operations.get('create')!.completedJobs).toBe(0);
    detach();
    expect(events.eventNames()).toEqual([]);
  });

  it('counts each event where docs/operations.md says, and nothing after detaching', () => {
    const { tally, events, detach } = setup();
    const error = { type: 'ServerError' as const, message: 'boom', status: 503 };
    const completed: DeliveryEventMap['job:attempt:completed'] = {
      ...base,
      durationMs: 40,
      result: { status: 200, headers: {}, body: null, durationMs: 40, attempts: 1 },
    };
    events.emit('job:attempt:completed', completed);
    events.emit('job:attempt:retrying', { ...base, durationMs: 7, error, delayMs: 10, nextAttemptAt: 0 });
    events.emit('job:dead:lettered', {
      ...base,
      deadLetterId: 'dl',
      error: { type: 'ClientError', message: '' },
    });
    events.emit('job:service:held', { ...base, reason: 'rateLimited', holdMs: 1, until: 0, error });
    events.emit('job:service:held', {
      ...base,
      reason: 'circuitOpen',
      holdMs: 1,
      until: 0,
      error: { type: 'CircuitOpenError', message: '' },
    });
    events.emit('job:run:interrupted', { ...base, reason: 'stalled' });
    events.emit('job:run:interrupted', { ...base, reason: 'shutdown' });
    // Another service's events, and a job name that is not an operation.
    events.emit('job:attempt:completed', { ...completed, service: 'other' });
    events.emit('job:dead:lettered', {
      ...base,
      operation: 'tok_secret_in_a_job_name',
      deadLetterId: 'dl',
      error: { type: 'ValidationError', message: '' },
    });

    const [service] = [...tally.services()];
    const op = service!.operations.get('create')!;
    expect({
      completed: op.completedJobs,
      deadLettered: op.deadLetteredJobs,
      succeeded: op.succeededAttempts,
      completedDurations: op.completedDurations.count,
      failedDurations: op.failedDurations.count,
      holds: [service!.rateLimitedHolds, service!.circuitOpenHolds],
      interrupted: [service!.stalledRuns, service!.shutdownRuns],
    }).toEqual({
      completed: 1,
      deadLettered: 1,
      succeeded: 1,
      completedDurations: 1,
      failedDurations: 1,
      holds: [1, 1],
      interrupted: [1, 1],
    });
    // ERROR_TYPES order: TimeoutError, NetworkError, ServerError, RateLimitedError, AuthenticationError,
    // ClientError, ...: the retried 503 and the held 503 (a call was made), and the dead-lettered 422.
    expect([...op.failedAttempts]).toEqual([0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    expect(service!.unknownOperation?.operation).toBe(UNKNOWN_OPERATION);
    expect(service!.unknownOperation?.deadLetteredJobs).toBe(1);
    expect([...tally.services()]).toHaveLength(1);

    detach();
    events.emit('job:attempt:completed', completed);
    expect(op.completedJobs).toBe(1);
    expect(events.eventNames()).toEqual([]);
  });

  it("renders through prom-client's JSON path too (Histogram.get)", async () => {
    const registry = new Registry();
    const tally = new DurationTally(BOUNDS_MS);
    tally.observe(20);
    tally.observe(2_000);
    new TalliedHistogram<'service'>({
      name: 'x_seconds',
      help: 'x',
      labelNames: ['service'],
      buckets: [...ATTEMPT_DURATION_BUCKETS_SECONDS],
      registers: [registry],
      series: () => [{ labels: { service: 'svc' }, tally }],
    });
    const [json] = await registry.getMetricsAsJSON();
    expect(json?.values).toContainEqual({
      labels: { le: 0.025, service: 'svc' },
      value: 1,
      metricName: 'x_seconds_bucket',
    });
    expect(json?.values).toContainEqual({
      labels: { service: 'svc' },
      value: 2.02,
      metricName: 'x_seconds_sum',
    });
    const scrape = new Scrape(await registry.metrics());
    expect(scrape.histogram('x_seconds', { service: 'svc' })).toMatchObject({
      count: 2,
      sum: 2.02,
      buckets: { '0.01': 0, '0.025': 1, '2.5': 2, '+Inf': 2 },
    });
  });
});
