/**
 * The encrypted secret store (issue 4) on a real redis-server: AES-256-GCM round trip, tampered and moved
 * ciphertexts refused, a wrong master key refused, master-key rotation with reencrypt, the version life cycle
 * (set, stage, promote, rollback, delete) and what list shows (never a value). Every test also looks through
 * every Redis key and value for the plain value.
 */
import { describe, expect, it } from 'vitest';

import { ConfigurationError, ValidationError } from '../../src/core/errors.ts';
import { generateMasterKey, open, parseKeyring, seal } from '../../src/secrets/crypto.ts';
import { MAX_PREVIOUS_VERSIONS, SecretStore } from '../../src/secrets/redis-store.ts';
import { base64Forms } from '../../src/secrets/scrub.ts';
import { dumpRedis, startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const KEY_A = generateMasterKey();
const KEY_B = generateMasterKey();

function storeWith(prefix: string, keys: string | undefined): SecretStore {
  return new SecretStore({
    connection: redis.client,
    prefix,
    keyring: keys === undefined ? undefined : parseKeyring(keys),
  });
}

async function expectNowhereInRedis(prefix: string, value: string): Promise<void> {
  const dump = await dumpRedis(redis.client, `${prefix}:*`);
  expect(dump.length).toBeGreaterThan(0);
  for (const form of [value, ...base64Forms(value), Buffer.from(value).toString('hex')]) {
    expect(dump).not.toContain(form);
  }
}

describe('envelopes', () => {
  const keyring = parseKeyring(KEY_A);

  it('round-trips, with a fresh nonce per value', () => {
    const first = seal(keyring, 'crm_key', 1, 'sk_live_round_trip');
    const second = seal(keyring, 'crm_key', 1, 'sk_live_round_trip');
    expect(first.iv).not.toBe(second.iv);
    expect(first.ct).not.toBe(second.ct);
    expect(open(keyring, 'crm_key', 1, first)).toBe('sk_live_round_trip');
    expect(first.kid).toMatch(/^k[0-9a-f]{8}$/);
  });

  it.each([
    ['a flipped ciphertext byte', (e: { ct: string }) => ({ ...e, ct: flip(e.ct) })],
    ['a flipped tag byte', (e: { tag: string }) => ({ ...e, tag: flip(e.tag) })],
    ['a flipped nonce byte', (e: { iv: string }) => ({ ...e, iv: flip(e.iv) })],
  ])('refuses %s', (_, tamper) => {
    const envelope = seal(keyring, 'crm_key', 1, 'sk_live_tamper');
    expect(() => open(keyring, 'crm_key', 1, tamper(envelope) as typeof envelope)).toThrow(
      ConfigurationError,
    );
  });

  it('refuses an envelope moved to another name or version (both are associated data)', () => {
    const envelope = seal(keyring, 'crm_key', 1, 'sk_live_moved');
    expect(() => open(keyring, 'other_key', 1, envelope)).toThrow('failed authentication');
    expect(() => open(keyring, 'crm_key', 2, envelope)).toThrow('failed authentication');
    expect(() => open(keyring, 'tenant/acme/crm_key', 1, envelope)).toThrow('failed authentication');
  });

  it('refuses a wrong key under the same id, and names a missing key id, never a value', () => {
    const envelope = seal(parseKeyring(`main:${KEY_A}`), 'crm_key', 1, 'sk_live_wrong_key');
    expect(() => open(parseKeyring(`main:${KEY_B}`), 'crm_key', 1, envelope)).toThrow(
      'failed authentication',
    );
    const missing = (): string => open(parseKeyring(KEY_B), 'crm_key', 1, envelope);
    expect(missing).toThrow('sealed with master key "main", which FERRY_SECRETS_KEY does not hold');
    expect(missing).not.toThrow(/sk_live/);
  });

  it.each([
    ['', 'no key given'],
    ['short', 'key 1 of 1: must be 32 bytes'],
    [`${KEY_A},${Buffer.alloc(16).toString('base64')}`, 'key 2 of 2: must be 32 bytes'],
    [`bad id!:${KEY_A}`, 'its id must match'],
    [`x:${KEY_A},x:${KEY_B}`, 'id "x" is used twice'],
  ])('parseKeyring refuses %j with a message that holds no key', (text, message) => {
    expect(() => parseKeyring(text)).toThrow(message);
    try {
      parseKeyring(text);
    } catch (error) {
      expect((error as Error).message).not.toContain(KEY_A);
      expect((error as Error).message).not.toContain(KEY_B);
    }
  });

  it('takes keys as base64 or 64 hex digits; the first one seals', () => {
    const hex = Buffer.from(KEY_B, 'base64').toString('hex');
    const keyring = parseKeyring(`new:${hex}, old:${KEY_A}`);
    expect(keyring.current.id).toBe('new');
    expect([...keyring.keys.keys()]).toEqual(['new', 'old']);
  });
});

describe('SecretStore', () => {
  it('stores only ciphertext: set, read, and no trace of the value in Redis', async () => {
    const prefix = uniquePrefix();
    const store = storeWith(prefix, KEY_A);
    expect(await store.set('crm_key', 'sk_live_4f8a9b2c1d')).toBe(1);
    expect(await store.read('crm_key')).toBe('sk_live_4f8a9b2c1d');
    expect(await store.read('absent')).toBeUndefined();
    await expectNowhereInRedis(prefix, 'sk_live_4f8a9b2c1d');
  });

  it('refuses a tampered ciphertext in Redis and one copied to another secret', async () => {
    const prefix = uniquePrefix();
    const store = storeWith(prefix, KEY_A);
    await store.set('crm_key', 'sk_live_tampered_in_redis');
    await store.set('other', 'sk_live_other_value');
    const hash = `${prefix}:{secrets}:secret:crm_key`;
    const stored = JSON.parse((await redis.client.hget(hash, 'v:1'))!) as { ct: string };
    await redis.client.hset(hash, 'v:1', JSON.stringify({ ...stored, ct: flip(stored.ct) }));
    await expect(store.read('crm_key')).rejects.toThrow(ConfigurationError);
    // Copy other's sealed version 1 over crm_key's: the associated data (name) no longer matches.
    await redis.client.hset(
      hash,
      'v:1',
      (await redis.client.hget(`${prefix}:{secrets}:secret:other`, 'v:1'))!,
    );
    await expect(store.read('crm_key')).rejects.toThrow('failed authentication');
  });

  it('refuses to open values with the wrong master key', async () => {
    const prefix = uniquePrefix();
    await storeWith(prefix, KEY_A).set('crm_key', 'sk_live_wrong_master');
    const wrong = storeWith(prefix, KEY_B);
    await expect(wrong.read('crm_key')).rejects.toThrow(/sealed with master key "k[0-9a-f]{8}"/);
    await expect(wrong.read('crm_key')).rejects.not.toThrow(/sk_live/);
    await expect(storeWith(prefix, undefined).read('crm_key')).rejects.toThrow('FERRY_SECRETS_KEY');
  });

  it('rotates the master key: new first key, reencrypt, then the old key can go', async () => {
    const prefix = uniquePrefix();
    const old = storeWith(prefix, KEY_A);
    await old.set('crm_key', 'sk_live_rotate_1');
    await old.set('crm_key', 'sk_live_rotate_2');
    await old.stage('crm_key', 'sk_live_rotate_3');
    await old.set('tenant/acme/crm_key', 'sk_live_rotate_acme');
    const during = storeWith(prefix, `${KEY_B},${KEY_A}`);
    expect(await during.read('crm_key')).toBe('sk_live_rotate_2');
    const generation = await during.generation();
    expect(await during.reencrypt()).toEqual({ resealed: 4, current: 0, failed: [] });
    expect(await during.generation()).not.toBe(generation);
    expect(await during.reencrypt()).toEqual({ resealed: 0, current: 4, failed: [] });
    const after = storeWith(prefix, KEY_B);
    expect(await after.read('crm_key')).toBe('sk_live_rotate_2');
    expect(await after.readStaged('crm_key')).toBe('sk_live_rotate_3');
    expect(await after.read('tenant/acme/crm_key')).toBe('sk_live_rotate_acme');
    await expect(old.read('crm_key')).rejects.toThrow(ConfigurationError);
    expect((await after.list()).every((info) => info.current?.keyId === parseKeyring(KEY_B).current.id)).toBe(
      true,
    );
  });

  it("rotates as docs/secrets.md does it: the old key, sealed under its fingerprint, now named 'old'", async () => {
    // Regression: an envelope names its key by id, and an id-less key's id is its fingerprint; giving the same
    // key an id during the rotation (new:$NEW,old:$OLD) made every stored version unreadable.
    const prefix = uniquePrefix();
    await storeWith(prefix, KEY_A).set('crm_key', 'sk_live_renamed_1');
    await storeWith(prefix, KEY_A).stage('crm_key', 'sk_live_renamed_2');
    const during = storeWith(prefix, `new:${KEY_B},old:${KEY_A}`);
    expect(await during.read('crm_key')).toBe('sk_live_renamed_1');
    expect(await during.reencrypt()).toEqual({ resealed: 2, current: 0, failed: [] });
    const after = storeWith(prefix, `new:${KEY_B}`);
    expect(await after.read('crm_key')).toBe('sk_live_renamed_1');
    expect(await after.readStaged('crm_key')).toBe('sk_live_renamed_2');
    // And back: sealed under id "new", opened by the same key given without an id.
    expect(await storeWith(prefix, KEY_B).read('crm_key')).toBe('sk_live_renamed_1');
    // A key that is not there still fails, naming the id it was sealed under.
    await expect(storeWith(prefix, KEY_A).read('crm_key')).rejects.toThrow(/sealed with master key "new"/);
  });

  it('reports versions it cannot open during a reencrypt, and leaves them as they were', async () => {
    const prefix = uniquePrefix();
    await storeWith(prefix, KEY_A).set('crm_key', 'sk_live_unopenable');
    const report = await storeWith(prefix, generateMasterKey()).reencrypt();
    expect(report.resealed).toBe(0);
    expect(report.failed).toEqual([
      { key: 'crm_key', version: 1, reason: expect.stringContaining('does not hold') as string },
    ]);
    expect(await storeWith(prefix, KEY_A).read('crm_key')).toBe('sk_live_unopenable');
  });

  it('reports an unreadable stored version during a reencrypt and goes on with the rest', async () => {
    const prefix = uniquePrefix();
    const store = storeWith(prefix, KEY_A);
    await store.set('broken', 'sk_live_broken');
    await store.set('fine', 'sk_live_fine');
    await redis.client.hset(`${prefix}:{secrets}:secret:broken`, 'v:1', 'not json');
    const report = await storeWith(prefix, `${KEY_B},${KEY_A}`).reencrypt();
    expect(report).toEqual({
      resealed: 1,
      current: 0,
      failed: [
        { key: 'broken', version: 1, reason: 'secret "broken" version 1: stored envelope is not readable' },
      ],
    });
  });

  it('stage → promote → rollback, each one atomic change that bumps the generation', async () => {
    const prefix = uniquePrefix();
    const store = storeWith(prefix, KEY_A);
    await store.set('crm_key', 'value-one');
    expect(await store.stage('crm_key', 'value-two')).toBe(2);
    expect(await store.read('crm_key')).toBe('value-one');
    expect(await store.readStaged('crm_key')).toBe('value-two');
    const before = await store.generation();
    expect(await store.promote('crm_key')).toEqual({ ok: true, version: 2 });
    expect(await store.generation()).not.toBe(before);
    expect(await store.read('crm_key')).toBe('value-two');
    expect(await store.readStaged('crm_key')).toBeUndefined();
    expect(await store.promote('crm_key')).toMatchObject({ ok: false, reason: 'nothing_staged' });
    expect(await store.rollback('crm_key')).toEqual({ ok: true, version: 1 });
    expect(await store.read('crm_key')).toBe('value-one');
    expect(await store.rollback('crm_key')).toMatchObject({ ok: false, reason: 'no_previous_version' });
    expect(await store.promote('nope')).toMatchObject({ ok: false, reason: 'not_found' });
    expect(await store.rollback('nope')).toMatchObject({ ok: false, reason: 'not_found' });
    await expectNowhereInRedis(prefix, 'value-one');
    await expectNowhereInRedis(prefix, 'value-two');
  });

  it('a second stage replaces the first; set leaves a staged version staged', async () => {
    const store = storeWith(uniquePrefix(), KEY_A);
    await store.set('k', 'v1');
    await store.stage('k', 'staged-a');
    await store.stage('k', 'staged-b');
    expect(await store.readStaged('k')).toBe('staged-b');
    await store.set('k', 'v4');
    const info = await store.info('k');
    expect(info).toMatchObject({
      current: { version: 4 },
      staged: { version: 3 },
      previous: [{ version: 1 }],
    });
  });

  it('keeps at most MAX_PREVIOUS_VERSIONS earlier versions', async () => {
    const prefix = uniquePrefix();
    const store = storeWith(prefix, KEY_A);
    for (let i = 1; i <= MAX_PREVIOUS_VERSIONS + 3; i++) await store.set('k', `value-${i}`);
    const info = await store.info('k');
    expect(info?.previous).toHaveLength(MAX_PREVIOUS_VERSIONS);
    expect(info?.previous[0]?.version).toBe(MAX_PREVIOUS_VERSIONS + 2);
    const fields = await redis.client.hkeys(`${prefix}:{secrets}:secret:k`);
    expect(fields.filter((field) => field.startsWith('v:'))).toHaveLength(MAX_PREVIOUS_VERSIONS + 1);
  });

  it('deletes one version that is not current, or the whole secret', async () => {
    const prefix = uniquePrefix();
    const store = storeWith(prefix, KEY_A);
    await store.set('k', 'v1');
    await store.set('k', 'v2');
    await store.stage('k', 'v3');
    expect(await store.delete('k', 2)).toMatchObject({ ok: false, reason: 'version_is_current' });
    expect(await store.delete('k', 9)).toMatchObject({ ok: false, reason: 'no_such_version' });
    expect(await store.delete('k', 3)).toEqual({ ok: true, version: 3 });
    expect(await store.readStaged('k')).toBeUndefined();
    expect(await store.delete('k', 1)).toEqual({ ok: true, version: 1 });
    expect(await store.rollback('k')).toMatchObject({ ok: false, reason: 'no_previous_version' });
    expect(await store.delete('k')).toEqual({ ok: true, version: 0 });
    expect(await store.read('k')).toBeUndefined();
    expect(await store.list()).toEqual([]);
    expect(await store.delete('k')).toMatchObject({ ok: false, reason: 'not_found' });
    expect(await redis.client.keys(`${prefix}:{secrets}:secret:*`)).toEqual([]);
  });

  it('a delete between counting a version and writing it does not let a later set reuse the number', async () => {
    // Regression: set counts its version (HINCRBY next) before sealing; a whole-secret delete in between
    // dropped the counter, so the following sets counted from 1 again and, on reaching the surviving
    // version's number, overwrote its envelope while history still named it.
    const prefix = uniquePrefix();
    const secret = `${prefix}:{secrets}:secret:k`;
    await storeWith(prefix, KEY_A).set('k', 'value-1');
    await storeWith(prefix, KEY_A).set('k', 'value-2');
    const racing = new Proxy(redis.client, {
      get(target, property, receiver) {
        if (property !== 'hincrby') return Reflect.get(target, property, receiver) as unknown;
        return async (...args: Parameters<typeof target.hincrby>) => {
          const version = await target.hincrby(...args);
          await storeWith(prefix, KEY_A).delete('k');
          return version;
        };
      },
    });
    const store = new SecretStore({ connection: racing, prefix, keyring: parseKeyring(KEY_A) });
    expect(await store.set('k', 'value-3')).toBe(3);
    const plain = storeWith(prefix, KEY_A);
    expect(await plain.set('k', 'value-4')).toBe(4);
    expect(await plain.rollback('k')).toEqual({ ok: true, version: 3 });
    expect(await plain.read('k')).toBe('value-3');
    expect(await redis.client.hget(secret, 'next')).toBe('4');
  });

  it('lists names, tenants, versions and dates, never a value; works without a master key', async () => {
    const prefix = uniquePrefix();
    let now = 1_700_000_000_000;
    const store = new SecretStore({
      connection: redis.client,
      prefix,
      keyring: parseKeyring(KEY_A),
      now: () => now,
    });
    await store.set('crm_key', 'listed-global-value');
    now += 1000;
    await store.set('tenant/acme/crm_key', 'listed-acme-value');
    await store.stage('crm_key', 'listed-staged-value');
    const list = await storeWith(prefix, undefined).list();
    expect(list).toEqual([
      {
        key: 'crm_key',
        name: 'crm_key',
        tenant: undefined,
        current: { version: 1, createdAt: 1_700_000_000_000, keyId: expect.any(String) as string },
        staged: { version: 2, createdAt: 1_700_000_001_000, keyId: expect.any(String) as string },
        previous: [],
        createdAt: 1_700_000_000_000,
        updatedAt: 1_700_000_001_000,
      },
      {
        key: 'tenant/acme/crm_key',
        name: 'crm_key',
        tenant: 'acme',
        current: { version: 1, createdAt: 1_700_000_001_000, keyId: expect.any(String) as string },
        staged: undefined,
        previous: [],
        createdAt: 1_700_000_001_000,
        updatedAt: 1_700_000_001_000,
      },
    ]);
    expect(JSON.stringify(list)).not.toMatch(/listed-/);
  });

  it.each(['Upper', 'a b', '../escape', 'tenant/acme', 'tenant/ac/me/x', ''])(
    'refuses the name %j',
    async (key) => {
      const store = storeWith(uniquePrefix(), KEY_A);
      await expect(store.set(key, 'value')).rejects.toBeInstanceOf(ValidationError);
    },
  );
});

function flip(base64: string): string {
  const bytes = Buffer.from(base64, 'base64');
  bytes[0] = bytes[0]! ^ 0x01;
  return bytes.toString('base64');
}
