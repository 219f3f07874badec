/**
 * No header value that undici refuses ever reaches it. undici throws on a control character or a character above
 * U+00FF in a header value, and a Pool that threw this way hung every later request (undici 7.30, found by the
 * chaos suite's fuzzing): one bad job could stall a whole service. A secret, a token endpoint's answer or a raw
 * producer's key may hold such a value, so the worker refuses it before the call (ValidationError, dead letter)
 * and the service's next jobs, on the same pool, still go through.
 */
import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';

import { ValidationError } from '../../src/core/errors.ts';
import { serviceQueueName } from '../../src/producer/index.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const downstream = await startDownstream(() => ({ status: 200, body: { ok: true } }));

describe('header values undici would refuse', () => {
  it('are dead-lettered as ValidationError before any call, and the service keeps working', async () => {
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        concurrency: 2,
        headers: { 'X-Region': '{{ secrets.region }}' },
      }),
      env: {
        FERRY_SECRET_REGION: 'eu-west',
        // \x01 and a character above U+00FF: the header template's own CR/LF/NUL check lets both through.
        FERRY_SECRET_TENANT_ctl__REGION: 'eu\x01west',
        FERRY_SECRET_TENANT_wide__REGION: 'eu–west',
      },
    });
    const bad = await Promise.all(
      ['ctl', 'wide', 'ctl', 'wide'].map((tenant, n) =>
        ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n }, tenant }),
      ),
    );
    for (const job of bad) {
      const view = await ferry.producer.waitFor('svc', job.id);
      expect(view.state).toBe('dead_lettered');
      expect(view.attempts).toBe(1);
      const letter = await ferry.pool.deadLetters.get(view.deadLetterId!);
      expect(letter?.data.finalError).toMatchObject({ type: 'ValidationError', field: 'headers.x-region' });
    }
    expect(downstream.requests).toHaveLength(0);

    // A raw BullMQ producer skips enqueue validation: its key above U+00FF is refused by the worker too.
    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
    const raw = await queue.add('create', { input: {}, idempotencyKey: 'order-€-1' });
    expect((await ferry.producer.waitFor('svc', raw.id!)).state).toBe('dead_lettered');
    await queue.close();
    expect(downstream.requests).toHaveLength(0);

    // Same pool, same sockets: the next jobs complete.
    const good = await Promise.all(
      [1, 2, 3].map((n) => ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n } })),
    );
    for (const job of good) expect((await ferry.producer.waitFor('svc', job.id)).state).toBe('completed');
    expect(downstream.requests).toHaveLength(3);
  });

  it('an idempotency key a header cannot carry is refused at enqueue, naming the field', async () => {
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url), start: false });
    for (const key of ['order-€-1', 'a\u0001b', 'tab\tis fine'.replace('\t', '\u007f')]) {
      const enqueue = ferry.producer.enqueue({ service: 'svc', operation: 'create', idempotencyKey: key });
      await expect(enqueue).rejects.toBeInstanceOf(ValidationError);
      await expect(enqueue).rejects.toMatchObject({ field: 'idempotencyKey' });
    }
    // Latin-1 and tab are what undici sends: still accepted.
    const ok = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      idempotencyKey: 'café\tnuméro-1',
    });
    expect(ok.id).toBeTruthy();
  });
});
