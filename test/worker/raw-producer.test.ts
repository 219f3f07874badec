/** Jobs from plain BullMQ producers (any language) that follow docs/queue-layout.md, and ones that don't. */
import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';

import { idempotentJobId, serviceQueueName } from '../../src/producer/index.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const downstream = await startDownstream();

async function rawQueue(prefix: string): Promise<Queue> {
  const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix });
  return queue;
}

describe('raw BullMQ producer', () => {
  it("a job added with plain Queue.add (default options: attempts 1) is processed and retried by Ferry's policy", async () => {
    let n = 0;
    downstream.script(() => (++n === 1 ? { status: 500 } : { status: 200, body: { ok: true } }));
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const queue = await rawQueue(ferry.prefix);
    const job = await queue.add('create', { input: { from: 'python' }, tenant: 'acme' });
    const view = await ferry.producer.waitFor('svc', job.id!);
    expect(view.state).toBe('completed');
    expect(view.result?.attempts).toBe(2);
    expect(downstream.requests.at(-1)?.body).toBe('{"from":"python"}');
    await queue.close();
  });

  it('a raw producer gets the same deduplication with the exported idempotent job id', async () => {
    downstream.script(() => ({ status: 200, body: {} }));
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url), start: false });
    const queue = await rawQueue(ferry.prefix);
    const raw = await queue.add(
      'create',
      { input: {}, idempotencyKey: 'k-1' },
      { jobId: idempotentJobId('k-1') },
    );
    const again = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: {},
      idempotencyKey: 'k-1',
    });
    expect(again).toEqual({ id: raw.id, service: 'svc', operation: 'create', created: false });
    await queue.close();
  });

  it.each([
    ['an unknown operation', 'nope', { input: {} }, 'operation'],
    ['data that is not an object', 'create', 'just a string', 'data'],
    ['a tenant of the wrong type', 'create', { input: {}, tenant: 42 }, 'data.tenant'],
    [
      'an idempotency key that is too long',
      'create',
      { input: {}, idempotencyKey: 'x'.repeat(201) },
      'data.idempotencyKey',
    ],
    // `ferry` is the worker's own bookkeeping: a malformed one must neither crash nor loop the run.
    [
      'a malformed ferry state (null attempt)',
      'create',
      { input: {}, ferry: { attempts: [null], heldMs: 0, stallsSeen: 0 } },
      'ferry.attempts[0]',
    ],
    [
      'a malformed ferry state (null final)',
      'create',
      { input: {}, ferry: { attempts: [], heldMs: 0, stallsSeen: 0, final: null } },
      'ferry.final',
    ],
    ['a ferry state that is not an object', 'create', { input: {}, ferry: 'x' }, 'ferry:'],
    // The stored history's version 2 (core/stored-history.ts): a bad run, and a version it does not know.
    [
      'a malformed stored run (attempt 0)',
      'create',
      { input: {}, ferry: { attempts: [2, [0, 'failed', 1, 1, 'x']], heldMs: 0, stallsSeen: 0 } },
      'ferry.attempts[1][0]',
    ],
    [
      'an unknown history version',
      'create',
      { input: {}, ferry: { attempts: [3, [1, 'failed', 1, 1, 'x']], heldMs: 0, stallsSeen: 0 } },
      'ferry.attempts[0]',
    ],
  ])(
    '%s is dead-lettered at once with ValidationError, without a call',
    async (_name, operation, data, field) => {
      const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
      const queue = await rawQueue(ferry.prefix);
      const before = downstream.requests.length;
      const job = await queue.add(operation, data);
      const view = await ferry.producer.waitFor('svc', job.id!);
      expect(view.state).toBe('dead_lettered');
      expect(view.lastError?.type).toBe('ValidationError');
      expect(view.lastError?.message).toContain(field);
      expect(downstream.requests.length).toBe(before);
      const dead = await ferry.pool.deadLetters.get(view.deadLetterId!);
      expect(dead?.data.finalError.type).toBe('ValidationError');
      await queue.close();
    },
  );

  it('a bad raw job does not stop the worker: the next good job is delivered', async () => {
    downstream.script(() => ({ status: 200, body: {} }));
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const queue = await rawQueue(ferry.prefix);
    await queue.add('create', null);
    const good = await queue.add('create', { input: { ok: 1 } });
    expect((await ferry.producer.waitFor('svc', good.id!)).state).toBe('completed');
    await queue.close();
  });
});
