import { describe, expect, it } from 'vitest';

import {
  deadLetterJobId,
  displayQueueName,
  idempotentJobId,
  serviceFromQueueName,
  serviceQueueName,
} from '../../src/core/queue-layout.ts';

describe('queue layout (DESIGN §3)', () => {
  it('names a service queue with a cluster hash tag and shows it without braces', () => {
    expect(serviceQueueName('crm')).toBe('{crm}');
    expect(displayQueueName('{crm}')).toBe('crm');
    expect(serviceFromQueueName('{crm}')).toBe('crm');
    expect(serviceFromQueueName('{dead-letter}')).toBeUndefined();
    expect(serviceFromQueueName('crm')).toBeUndefined();
  });

  it('derives a BullMQ-safe, deterministic job id from any idempotency key', () => {
    const id = idempotentJobId('order:42/ü');
    expect(id).toBe(idempotentJobId('order:42/ü'));
    expect(id).not.toBe(idempotentJobId('order:43/ü'));
    expect(id).not.toContain(':');
    expect(id).toMatch(/^idem-[A-Za-z0-9_-]{43}$/);
  });

  it('keeps dead-letter ids unambiguous when service names contain dashes', () => {
    expect(deadLetterJobId('a', 'b-c', 1)).not.toBe(deadLetterJobId('a-b', 'c', 1));
    expect(deadLetterJobId('crm', 'idem-x', 1763895000000)).toBe('dl-crm.idem-x.1763895000000');
    // The same id under another creation time is another job: it gets its own dead letter.
    expect(deadLetterJobId('crm', '7', 1)).not.toBe(deadLetterJobId('crm', '7', 2));
  });
});
