/** How stream entries become public job events: the tenant a subscriber is filtered on comes from the right place. */
import { describe, expect, it } from 'vitest';

import { toDispatch } from '../../../src/api/job-events/map.ts';
import { HELD_STREAM_EVENT, RETRYING_STREAM_EVENT } from '../../../src/core/job-events.ts';

const error = { type: 'ServerError' as const, message: 'boom', status: 500 };

describe('toDispatch', () => {
  it.each([
    [
      RETRYING_STREAM_EVENT,
      { operation: 'create', tenant: 'acme', attempt: 1, error, delayMs: 10, nextAttemptAt: 5 },
    ],
    [
      HELD_STREAM_EVENT,
      { operation: 'create', tenant: 'acme', reason: 'rateLimited', holdMs: 1000, until: 9, error },
    ],
  ])(
    '%s: the tenant the worker wrote beats a cached job’s (an earlier job under the same id)',
    (event, payload) => {
      const dispatch = toDispatch(
        'svc',
        { id: '1-0', event, fields: { jobId: 'j1', data: JSON.stringify(payload) } },
        { operation: 'create', tenant: 'globex' },
        undefined,
      );
      expect(dispatch).toMatchObject({
        kind: 'event',
        hasJobInfo: true,
        event: { data: { jobId: 'j1', tenant: 'acme' } },
      });
    },
  );

  it.each(['added', 'active', 'completed', 'removed'])(
    "%s of a schedule's tick is no job event (only the run it adds is)",
    (event) => {
      const entry = { id: '1-0', event, fields: { jobId: 'repeat:ferry-schedule-nightly:1795500000000' } };
      expect(toDispatch('svc', entry, undefined, undefined)).toBeUndefined();
    },
  );

  it('a completed result gets the metadata of the job it read, never a sealed job’s', () => {
    const entry = {
      id: '1-0',
      event: 'completed',
      fields: { jobId: 'j1', returnvalue: JSON.stringify([2, 200, {}, null, 5, 1]) },
    };
    const metadata = { order: 42 };
    const plain = toDispatch('svc', entry, { operation: 'create', metadata }, undefined);
    expect(plain).toMatchObject({ event: { data: { result: { status: 200, metadata } } } });
    const sealed = toDispatch('svc', entry, { operation: 'create', metadata, sealed: true }, undefined);
    expect(sealed).toMatchObject({ event: { data: { result: { status: 200, attempts: 1 } } } });
    expect(
      sealed?.kind === 'event' && 'result' in sealed.event.data && sealed.event.data.result,
    ).not.toHaveProperty('metadata');
  });

  it('a native event takes the tenant of the job it read', () => {
    const dispatch = toDispatch(
      'svc',
      { id: '1-0', event: 'active', fields: { jobId: 'j1' } },
      { operation: 'create', tenant: 'globex' },
      undefined,
    );
    expect(dispatch).toMatchObject({ kind: 'event', event: { event: 'active', data: { tenant: 'globex' } } });
  });
});
