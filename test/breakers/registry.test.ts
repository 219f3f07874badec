import { type Cluster, Redis } from 'ioredis';
import { describe, expect, expectTypeOf, it, onTestFinished, vi } from 'vitest';

import {
  breakerDefaults,
  BreakerOpenError,
  type BreakerOptions,
  type BreakerRegistry,
  BreakerRegistryClosedError,
  type BreakerState,
  isBreakerOpenError,
  type RedisLike,
  type ServiceBreaker,
} from '../../src/breakers/index.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import {
  ClientSideError,
  deferred,
  failing,
  instrumentRedis,
  isFailure,
  openRegistry,
  recordTransitions,
  rejectionOf,
  UnhealthyError,
} from './support.ts';

// At the top level, not in beforeAll: startRedis() registers its own afterAll (stop the server), and one
// registered from inside beforeAll never ran here (vitest 4.1) — the redis-server outlived the test file.
const redis = await startRedis();

/** Opens after more than 50 % of at least 4 calls fail. */
const options: BreakerOptions = {
  errorThresholdPercentage: 50,
  volumeThreshold: 4,
  rollingWindowMs: 10_000,
  resetTimeoutMs: 400,
};

function setup(overrides: { redis?: RedisLike; clock?: { now(): number }; syncIntervalMs?: number } = {}): {
  registry: BreakerRegistry;
  breaker: ServiceBreaker;
  key: string;
  transitions: string[];
} {
  const prefix = uniquePrefix();
  const keyFor = (name: string): string => `${prefix}:breaker:${name}`;
  const registry = openRegistry({ redis: overrides.redis ?? redis.client, keyFor, ...overrides });
  const transitions = recordTransitions(registry);
  return { registry, breaker: registry.get('crm', options), key: keyFor('crm'), transitions };
}

async function trip(breaker: ServiceBreaker, calls = options.volumeThreshold): Promise<void> {
  for (let i = 0; i < calls; i += 1) {
    await expect(breaker.execute(failing, isFailure)).rejects.toBeInstanceOf(UnhealthyError);
  }
}

const readShared = async (key: string): Promise<unknown> =>
  JSON.parse((await redis.client.get(key)) ?? 'null');

describe('failure detection (opossum, local)', () => {
  it('opens once more than errorThresholdPercentage of volumeThreshold calls fail, and stores it in Redis', async () => {
    const { breaker, key, transitions } = setup();
    await trip(breaker, options.volumeThreshold - 1);
    expect(breaker.state()).toEqual({ state: 'closed' });

    await expect(breaker.execute(failing, isFailure)).rejects.toBeInstanceOf(UnhealthyError);

    const state = breaker.state();
    expect(state).toEqual({ state: 'open', untilMs: expect.any(Number) });
    expect(transitions).toEqual(['crm: closed→open (local)']);
    await expect
      .poll(() => readShared(key))
      .toEqual({ untilMs: (state as { untilMs: number }).untilMs, openedAtMs: expect.any(Number) });
    // PX outlives untilMs, so other processes can still see "half-open" after it.
    expect(await redis.client.pttl(key)).toBeGreaterThan(
      options.resetTimeoutMs + breakerDefaults.sharedStateMarginMs - 1000,
    );
  });

  it('stays closed at exactly the threshold (2 of 4 failing is 50 %, not above)', async () => {
    const { breaker, key } = setup();
    for (const fn of [failing, () => Promise.resolve('ok'), failing, () => Promise.resolve('ok')]) {
      await breaker.execute(fn, isFailure).catch(() => undefined);
    }
    expect(breaker.state()).toEqual({ state: 'closed' });
    expect(await redis.client.exists(key)).toBe(0);
  });

  it('passes non-counted rejections through unchanged and never opens for them', async () => {
    const { breaker, key, transitions } = setup();
    for (let i = 0; i < 20; i += 1) {
      const error = new ClientSideError('404');
      await expect(breaker.execute(() => Promise.reject(error), isFailure)).rejects.toBe(error);
    }
    expect(breaker.state()).toEqual({ state: 'closed' });
    expect(transitions).toEqual([]);
    expect(await redis.client.exists(key)).toBe(0);
  });

  it('counts an error whose failure test throws, and the call still settles with the error', async () => {
    const { breaker, transitions } = setup();
    const throwingTest = (): boolean => {
      throw new Error('bug in the failure test');
    };
    for (let i = 0; i < options.volumeThreshold; i += 1) {
      const error = new UnhealthyError('502');
      // A hang here (the call never settling) fails the test by its timeout.
      await expect(breaker.execute(() => Promise.reject(error), throwingTest)).rejects.toBe(error);
    }
    expect(breaker.state().state).toBe('open');
    expect(transitions).toEqual(['crm: closed→open (local)']);
  });

  it('returns the value of a successful call', async () => {
    const { breaker } = setup();
    await expect(breaker.execute(() => Promise.resolve({ status: 200 }), isFailure)).resolves.toEqual({
      status: 200,
    });
  });

  it('makes no Redis call while closed (hot path)', async () => {
    const instrumented = instrumentRedis(redis.client);
    const { breaker } = setup({ redis: instrumented.redis, syncIntervalMs: 60_000 });
    // get() reads the shared state once, at creation.
    await expect.poll(() => instrumented.calls).toEqual(['get']);

    const results = await Promise.allSettled(
      Array.from({ length: 500 }, (_, i) =>
        breaker.execute(
          () => (i % 3 === 0 ? Promise.reject(new ClientSideError('400')) : Promise.resolve(i)),
          isFailure,
        ),
      ),
    );

    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(333);
    expect(instrumented.calls).toEqual(['get']);
  });
});

describe('open', () => {
  it('refuses with BreakerOpenError (retryAfterMs = time left open) without calling fn', async () => {
    let nowMs = 1_000_000;
    const { breaker } = setup({ clock: { now: () => nowMs } });
    await trip(breaker);
    const fn = vi.fn(() => Promise.resolve('called'));

    const first = await rejectionOf(breaker.execute(fn, isFailure));
    nowMs += 150;
    const second = await rejectionOf(breaker.execute(fn, isFailure));

    expect(fn).not.toHaveBeenCalled();
    expect(first).toBeInstanceOf(BreakerOpenError);
    expect(isBreakerOpenError(first)).toBe(true);
    expect(first).toMatchObject({
      breaker: 'crm',
      reason: 'open',
      retryAfterMs: options.resetTimeoutMs,
      code: 'FERRY_BREAKER_OPEN',
    });
    expect(second).toMatchObject({ retryAfterMs: options.resetTimeoutMs - 150 });
  });

  it('becomes half-open after resetTimeoutMs; a successful probe closes it and deletes the shared key', async () => {
    const { breaker, key, transitions } = setup();
    await trip(breaker);
    await expect.poll(() => breaker.state()).toEqual({ state: 'halfOpen' });

    await expect(breaker.execute(() => Promise.resolve('probe ok'), isFailure)).resolves.toBe('probe ok');

    expect(breaker.state()).toEqual({ state: 'closed' });
    expect(transitions).toEqual([
      'crm: closed→open (local)',
      'crm: open→halfOpen (local)',
      'crm: halfOpen→closed (local)',
    ]);
    await expect.poll(() => redis.client.exists(key, `${key}:probe`)).toBe(0);
  });

  it('starts a fresh rolling window after closing (failures from before the outage do not re-trip it)', async () => {
    const { breaker } = setup();
    await trip(breaker);
    await expect.poll(() => breaker.state().state).toBe('halfOpen');
    await breaker.execute(() => Promise.resolve('probe ok'), isFailure);

    await trip(breaker, options.volumeThreshold - 1);

    expect(breaker.state()).toEqual({ state: 'closed' });
  });

  it('re-opens for another resetTimeoutMs when the probe fails, and releases the probe lock', async () => {
    const { breaker, key, transitions } = setup();
    await trip(breaker);
    const firstUntil = (breaker.state() as { untilMs: number }).untilMs;
    await expect.poll(() => breaker.state().state).toBe('halfOpen');

    const error = new UnhealthyError('still down');
    await expect(breaker.execute(() => Promise.reject(error), isFailure)).rejects.toBe(error);

    const reopened = breaker.state();
    expect(reopened).toEqual({ state: 'open', untilMs: expect.any(Number) });
    expect((reopened as { untilMs: number }).untilMs).toBeGreaterThanOrEqual(
      firstUntil + options.resetTimeoutMs,
    );
    expect(transitions.slice(-1)).toEqual(['crm: halfOpen→open (local)']);
    await expect
      .poll(() => readShared(key))
      .toMatchObject({ untilMs: (reopened as { untilMs: number }).untilMs });
    await expect.poll(() => redis.client.exists(`${key}:probe`)).toBe(0);
  });

  it('closes when the probe is rejected with a non-counted error (the service answered)', async () => {
    const { breaker, key } = setup();
    await trip(breaker);
    await expect.poll(() => breaker.state().state).toBe('halfOpen');

    const error = new ClientSideError('422');
    await expect(breaker.execute(() => Promise.reject(error), isFailure)).rejects.toBe(error);

    expect(breaker.state()).toEqual({ state: 'closed' });
    await expect.poll(() => redis.client.exists(key)).toBe(0);
  });

  it('runs one probe at a time: other callers get a short retryAfterMs and fn is not called', async () => {
    const { breaker } = setup();
    await trip(breaker);
    await expect.poll(() => breaker.state().state).toBe('halfOpen');
    const probe = deferred<string>();
    const probing = breaker.execute(() => probe.promise, isFailure);
    const other = vi.fn(() => Promise.resolve('other'));

    const refusals = await Promise.all(
      Array.from({ length: 5 }, () => rejectionOf(breaker.execute(other, isFailure))),
    );

    expect(other).not.toHaveBeenCalled();
    for (const refusal of refusals) {
      expect(refusal).toMatchObject({ reason: 'probing', retryAfterMs: breakerDefaults.probeRetryAfterMs });
    }
    probe.resolve('done');
    await expect(probing).resolves.toBe('done');
    expect(breaker.state()).toEqual({ state: 'closed' });
  });
});

describe('manual open and close', () => {
  it('open(durationMs) opens in Redis and locally; close() closes both; events say manual', async () => {
    const { breaker, key, transitions } = setup();
    const before = Date.now();

    await breaker.open(60_000);

    const state = breaker.state() as Extract<BreakerState, { state: 'open' }>;
    expect(state.state).toBe('open');
    expect(state.untilMs).toBeGreaterThanOrEqual(before + 60_000);
    expect(await readShared(key)).toEqual({
      untilMs: state.untilMs,
      openedAtMs: expect.any(Number),
      manual: true,
    });
    expect(await redis.client.pttl(key)).toBeGreaterThan(60_000);
    await expect(breaker.execute(() => Promise.resolve('x'), isFailure)).rejects.toSatisfy(
      isBreakerOpenError,
    );

    await breaker.close();

    expect(breaker.state()).toEqual({ state: 'closed' });
    expect(await redis.client.exists(key)).toBe(0);
    await expect(breaker.execute(() => Promise.resolve('x'), isFailure)).resolves.toBe('x');
    expect(transitions).toEqual(['crm: closed→open (manual)', 'crm: open→closed (manual)']);
  });

  it('open() without a duration lasts resetTimeoutMs', async () => {
    const nowMs = 5_000_000;
    const { breaker } = setup({ clock: { now: () => nowMs } });
    await breaker.open();
    expect(breaker.state()).toEqual({ state: 'open', untilMs: nowMs + options.resetTimeoutMs });
  });

  it('refuses a non-positive duration', async () => {
    const { breaker } = setup();
    await expect(breaker.open(0)).rejects.toBeInstanceOf(RangeError);
    expect(breaker.state()).toEqual({ state: 'closed' });
  });

  it('a failed Redis write rejects and leaves the local state alone', async () => {
    const instrumented = instrumentRedis(redis.client);
    const { breaker, transitions } = setup({ redis: instrumented.redis });
    instrumented.failing.add('set');
    await expect(breaker.open(10_000)).rejects.toThrow('injected set failure');
    expect(breaker.state()).toEqual({ state: 'closed' });
    expect(transitions).toEqual([]);
  });
});

describe('Redis errors', () => {
  it('keeps the last known state when the sync GET fails, and emits breaker:sync:error', async () => {
    const instrumented = instrumentRedis(redis.client);
    const { registry, breaker, key } = setup({ redis: instrumented.redis, syncIntervalMs: 50 });
    const errors: string[] = [];
    registry.on('breaker:sync:error', (event) =>
      errors.push(`${event.name} ${event.operation}: ${String(event.error)}`),
    );
    await breaker.open(60_000);
    const open = breaker.state();
    instrumented.failing.add('get');
    await redis.client.del(key);

    await expect.poll(() => errors.length).toBeGreaterThanOrEqual(2);
    expect(errors[0]).toBe('crm read: Error: injected get failure');
    expect(breaker.state()).toEqual(open);

    instrumented.failing.delete('get');
    await expect.poll(() => breaker.state()).toEqual({ state: 'closed' });
  });

  it('retries a failed automatic open write at the next sync', async () => {
    const instrumented = instrumentRedis(redis.client);
    const { registry, breaker, key } = setup({ redis: instrumented.redis, syncIntervalMs: 50 });
    const errors: string[] = [];
    registry.on('breaker:sync:error', (event) => errors.push(event.operation));
    instrumented.failing.add('eval');
    // A long reset so the retried write is still worth storing.
    const long = registry.get('long', { ...options, resetTimeoutMs: 60_000 });
    await trip(long);
    await expect.poll(() => errors).toContain('write');

    instrumented.failing.delete('eval');

    await expect
      .poll(() => readShared(key.replace(/crm$/, 'long')))
      .toMatchObject({ untilMs: expect.any(Number) });
    expect(long.state().state).toBe('open');
    expect(breaker.state().state).toBe('closed');
  });
});

describe('registry', () => {
  it('creates a breaker lazily and returns the same instance after', () => {
    const { registry, breaker } = setup();
    expect(registry.get('crm', { ...options, volumeThreshold: 99 })).toBe(breaker);
    expect(registry.get('mail', options)).not.toBe(breaker);
    expect(registry.list()).toEqual([
      { name: 'crm', state: { state: 'closed' } },
      { name: 'mail', state: { state: 'closed' } },
    ]);
  });

  it('refuses invalid options with a RangeError naming the field', () => {
    const { registry } = setup();
    expect(() => registry.get('bad', { ...options, volumeThreshold: -1 })).toThrow(
      'breaker "bad": volumeThreshold must be an integer >= 0 (got -1)',
    );
    expect(() => registry.get('bad', { ...options, errorThresholdPercentage: 101 })).toThrow(RangeError);
    expect(() => registry.get('bad', { ...options, probeTimeoutMs: 0 })).toThrow(/probeTimeoutMs/);
  });

  it('off() removes a listener', async () => {
    const { registry, breaker } = setup();
    const listener = vi.fn();
    registry.on('breaker:state:changed', listener).off('breaker:state:changed', listener);
    await breaker.open(1000);
    expect(listener).not.toHaveBeenCalled();
  });

  it('close() is idempotent; afterwards breakers refuse to run and get() of a new name throws', async () => {
    const { registry, breaker } = setup();
    const fn = vi.fn(() => Promise.resolve('x'));

    const closing = registry.close();
    expect(registry.close()).toBe(closing);
    await closing;

    await expect(breaker.execute(fn, isFailure)).rejects.toBeInstanceOf(BreakerRegistryClosedError);
    expect(fn).not.toHaveBeenCalled();
    expect(() => registry.get('new', options)).toThrow(BreakerRegistryClosedError);
  });

  it('close() stops the sync timer', async () => {
    const instrumented = instrumentRedis(redis.client);
    const { registry } = setup({ redis: instrumented.redis, syncIntervalMs: 10 });
    await expect.poll(() => instrumented.calls.length).toBeGreaterThan(3);
    await registry.close();
    const issued = instrumented.calls.length;
    // Proving that nothing happens needs time to pass: a twin registry started now, on the same interval, has
    // synced 10 times since; the closed one's timer would have fired as often.
    const twin = instrumentRedis(redis.client);
    const { registry: running } = setup({ redis: twin.redis, syncIntervalMs: 10 });
    onTestFinished(() => running.close());
    await expect.poll(() => twin.calls.length, { timeout: 10_000 }).toBeGreaterThan(10);
    expect(instrumented.calls.length).toBe(issued);
  });
});

describe('errors', () => {
  it.each<[string, unknown, boolean]>([
    ['a BreakerOpenError', new BreakerOpenError('crm', 1000, 'open'), true],
    [
      'one from another copy of the module (same registered brand)',
      { [Symbol.for('ferry.breakers.BreakerOpenError')]: true },
      true,
    ],
    ['a plain Error', new Error('Breaker is open'), false],
    ['an object that only looks like one', { name: 'BreakerOpenError', retryAfterMs: 1 }, false],
    ['null', null, false],
    ['a string', 'BreakerOpenError', false],
  ])('isBreakerOpenError(%s) is %s', (_title, value, expected) => {
    expect(isBreakerOpenError(value)).toBe(expected);
  });
});

describe('RedisLike', () => {
  it('is satisfied by ioredis Redis and Cluster, and NX SET answers OK or null as the probe lock expects', async () => {
    expectTypeOf<Redis>().toExtend<RedisLike>();
    expectTypeOf<Cluster>().toExtend<RedisLike>();
    const client = new Redis(redis.url);
    const asRedisLike: RedisLike = client;
    const key = `${uniquePrefix()}:nx`;
    try {
      await expect(asRedisLike.set(key, 'a', 'PX', 10_000, 'NX')).resolves.toBe('OK');
      await expect(asRedisLike.set(key, 'b', 'PX', 10_000, 'NX')).resolves.toBeNull();
    } finally {
      client.disconnect();
    }
  });
});
