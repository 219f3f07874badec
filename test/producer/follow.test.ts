/**
 * Producer.get shows a job's links (issue 16) and Producer.waitFor(…, { follow: true }) follows them: a `then`
 * step's `next` and a fallback's `routedTo`, to the end of the chain, with a bound and a clear error for a
 * link to a job that does not exist. The chain is worked through with BullMQ directly while waitFor waits, as
 * the worker's reactions would: the next job added first, then the source completed naming it.
 */
import { describe, expect, it } from 'vitest';

import type { JobOrigin } from '../../src/core/job.ts';
import { FollowError, ValidationError, WaitTimeoutError } from '../../src/producer/index.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { type RawJobs, rawJobs } from '../helpers/raw-jobs.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

async function setup(): Promise<{ ferry: TestFerry; raw: RawJobs }> {
  const operations = { step: { method: 'POST', path: '/s' } };
  const ferry = await createTestFerry(redis, {
    start: false,
    services: {
      services: {
        crm: { baseUrl: 'http://127.0.0.1:9', operations },
        billing: { baseUrl: 'http://127.0.0.1:9', operations },
        backup: { baseUrl: 'http://127.0.0.1:9', operations },
      },
    },
  });
  return { ferry, raw: rawJobs(redis.url, ferry.prefix) };
}

describe('Producer.waitFor with follow', () => {
  it('follows a then step and a fallback route to the last job, and returns the chain', async () => {
    const { ferry, raw } = await setup();
    const { id: first } = await ferry.producer.enqueue({
      service: 'crm',
      operation: 'step',
      input: { n: 1 },
    });
    const waited = ferry.producer.waitFor('crm', first, { follow: true, timeoutMs: 20_000 });

    // crm's job completes with a then step on billing; billing's breaker is open: routed to backup.
    const step1 = await raw.take('crm');
    const thenOrigin: JobOrigin = { kind: 'then', source: { service: 'crm', jobId: first }, depth: 1 };
    const second = await raw.add('billing', 'step', { input: { n: 2 }, origin: thenOrigin }, 'then-2');
    await raw.complete(step1, { body: { id: 7 }, next: { service: 'billing', jobId: second } });
    const step2 = await raw.take('billing');
    const third = await raw.add(
      'backup',
      'step',
      {
        input: { n: 2 },
        origin: { kind: 'fallback', source: { service: 'billing', jobId: second }, depth: 1 },
      },
      'routed-3',
    );
    await raw.complete(step2, { routedTo: { service: 'backup', jobId: third } });
    await raw.complete(await raw.take('backup'), { status: 201, body: { done: true } });

    const last = await waited;
    expect(last).toMatchObject({
      service: 'backup',
      id: third,
      state: 'completed',
      result: { status: 201, body: { done: true } },
      origin: { kind: 'fallback', source: { service: 'billing', jobId: second } },
    });
    expect(last.chain).toEqual([
      { service: 'crm', jobId: first },
      { service: 'billing', jobId: second },
      { service: 'backup', jobId: third },
    ]);
    // Without follow, waitFor stops at the job asked for, which shows its link.
    const one = await ferry.producer.waitFor('crm', first, { timeoutMs: 5_000 });
    expect(one).toMatchObject({ state: 'completed', next: { service: 'billing', jobId: second } });
    expect(one).not.toHaveProperty('chain');
  });

  it('a job without links is its own chain', async () => {
    const { ferry, raw } = await setup();
    const { id } = await ferry.producer.enqueue({ service: 'crm', operation: 'step' });
    await raw.complete(await raw.take('crm'));
    const view = await ferry.producer.waitFor('crm', id, { follow: true, timeoutMs: 5_000 });
    expect(view).toMatchObject({ id, state: 'completed' });
    expect(view.chain).toEqual([{ service: 'crm', jobId: id }]);
  });

  it('a link to a job that does not exist rejects with FollowError naming it', async () => {
    const { ferry, raw } = await setup();
    const { id } = await ferry.producer.enqueue({ service: 'crm', operation: 'step' });
    await raw.complete(await raw.take('crm'), { next: { service: 'billing', jobId: 'gone-1' } });
    const error = await ferry.producer
      .waitFor('crm', id, { follow: true, timeoutMs: 5_000 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FollowError);
    expect((error as FollowError).message).toBe(
      `job billing/gone-1, which crm/${id} links to, does not exist`,
    );
    expect((error as FollowError).ref).toEqual({ service: 'billing', jobId: 'gone-1' });
    expect((error as FollowError).chain).toEqual([
      { service: 'crm', jobId: id },
      { service: 'billing', jobId: 'gone-1' },
    ]);
  });

  it('stops after maxHops links: a cycle (or an overlong chain) cannot keep it waiting', async () => {
    const { ferry, raw } = await setup();
    // Two jobs that name each other: written by hand, since Ferry's own chains are bounded by depth.
    const a = await raw.add('crm', 'step', { input: {} }, 'cycle-a');
    const b = await raw.add('billing', 'step', { input: {} }, 'cycle-b');
    await raw.complete(await raw.take('crm'), { next: { service: 'billing', jobId: b } });
    await raw.complete(await raw.take('billing'), { next: { service: 'crm', jobId: a } });
    const error = await ferry.producer
      .waitFor('crm', a, { follow: true, maxHops: 5, timeoutMs: 10_000 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FollowError);
    expect((error as FollowError).message).toMatch(/^chain from crm\/cycle-a is longer than 5 links/);
    expect((error as FollowError).chain).toHaveLength(6);
    for (const maxHops of [Number.NaN, -1, 1.5]) {
      const refused = await ferry.producer
        .waitFor('crm', a, { follow: true, maxHops, timeoutMs: 1_000 })
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(ValidationError);
      expect((refused as ValidationError).field).toBe('maxHops');
    }
  });

  it('the timeout covers the whole chain: a next step that never finishes times out on that step', async () => {
    const { ferry, raw } = await setup();
    const { id } = await ferry.producer.enqueue({ service: 'crm', operation: 'step' });
    const next = await raw.add('billing', 'step', { input: {} }, 'stuck-1');
    await raw.complete(await raw.take('crm'), { next: { service: 'billing', jobId: next } });
    const error = await ferry.producer
      .waitFor('crm', id, { follow: true, timeoutMs: 500 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WaitTimeoutError);
    expect((error as WaitTimeoutError).message).toMatch(/^job billing\/stuck-1 did not finish within 500 ms/);
    expect((error as WaitTimeoutError).job).toMatchObject({ id: next, state: 'waiting' });
  });
});

describe('Producer.enqueue and origin', () => {
  it('refuses a producer-set origin with a ValidationError naming the field', async () => {
    const { ferry } = await setup();
    const origin: JobOrigin = { kind: 'onFailure', deadLetterId: 'dl-x', rule: 0, depth: 0 };
    const request = { service: 'crm', operation: 'step', origin };
    const one = await ferry.producer.enqueue(request as never).catch((e: unknown) => e);
    expect(one).toBeInstanceOf(ValidationError);
    expect((one as ValidationError).field).toBe('origin');
    const many = await ferry.producer
      .enqueueMany([{ service: 'crm', operation: 'step' }, request as never])
      .catch((e: unknown) => e);
    expect((many as ValidationError).field).toBe('[1].origin');
    // No job was written. The queue's `meta` (and `events`) belong to the running worker, which writes them
    // whenever its start reaches Redis: on a loaded machine that can be during this test (CI saw `meta`).
    const keys = await redis.client.keys(`${ferry.prefix}:{crm}:*`);
    expect(keys.filter((key) => !/:(meta|events)$/.test(key))).toEqual([]);
  });
});
