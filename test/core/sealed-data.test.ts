import { randomBytes } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { SEALED_PLACEHOLDER } from '../../src/core/job.ts';
import {
  maxSealedLength,
  openJobContent,
  parseSealedEnvelope,
  sealedJobId,
  sealJobContent,
  sealJobData,
} from '../../src/core/sealed-data.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';

const keyA = randomBytes(32).toString('base64');
const keyB = randomBytes(32).toString('base64');
const ringA = parseKeyring(`a:${keyA}`);
const ringB = parseKeyring(`b:${keyB}`);
/** After a rotation: b seals, a still opens. */
const rotated = parseKeyring(`b:${keyB},a:${keyA}`);
/** The same key a, now known under another id (given one after it sealed under its fingerprint). */
const renamed = parseKeyring(`renamed:${keyA}`);
const LIMIT = maxSealedLength(256 * 1024);
const content = { input: { email: 'ada@example.com', n: 1 }, metadata: { orderId: 'o-7' } };
const where = { service: 'crm', tenant: 'acme' as string | undefined };
const sealed = sealJobContent(ringA, { ...where, jobId: 'job-1' }, content);

/** Flips one base64url character of part `index` (1-based after the format label) of an envelope. */
function tamper(envelope: string, index: number): string {
  const parts = envelope.split('.');
  const part = parts[index]!;
  parts[index] = (part[0] === 'A' ? 'B' : 'A') + part.slice(1);
  return parts.join('.');
}

describe('sealJobContent / openJobContent', () => {
  it('opens what it sealed, and the envelope holds no plaintext and names its job', () => {
    expect(openJobContent(ringA, where, sealed, LIMIT)).toEqual(content);
    expect(sealed).not.toContain('ada@example.com');
    expect(sealed).not.toContain(Buffer.from('ada@example.com').toString('base64url'));
    expect(sealedJobId(sealed)).toBe('job-1');
    expect(sealed.split('.')[1]).toBe('a');
  });

  it('uses a fresh nonce for each envelope', () => {
    const again = sealJobContent(ringA, { ...where, jobId: 'job-1' }, content);
    expect(again).not.toBe(sealed);
    expect(openJobContent(ringA, where, again, LIMIT)).toEqual(content);
  });

  it.each([
    ['another service', ringA, { service: 'billing', tenant: 'acme' }, sealed, 'ValidationError'],
    ['another tenant', ringA, { service: 'crm', tenant: 'globex' }, sealed, 'ValidationError'],
    ['no tenant', ringA, { service: 'crm', tenant: undefined }, sealed, 'ValidationError'],
    ['a tampered tag', ringA, where, tamper(sealed, 4), 'ValidationError'],
    ['a tampered ciphertext', ringA, where, tamper(sealed, 5), 'ValidationError'],
    ['a tampered nonce', ringA, where, tamper(sealed, 3), 'ValidationError'],
    ['another job id in the envelope', ringA, where, tamper(sealed, 2), 'ValidationError'],
    ['a wrong key under the same id', parseKeyring(`a:${keyB}`), where, sealed, 'ValidationError'],
    ['an unknown key id', ringB, where, sealed, 'ConfigurationError'],
    ['no keyring', undefined, where, sealed, 'ConfigurationError'],
    ['not a string', ringA, where, 42, 'ValidationError'],
    ['another format', ringA, where, sealed.replace('fs1.', 'fs9.'), 'ValidationError'],
    ['a part missing', ringA, where, sealed.split('.').slice(0, 5).join('.'), 'ValidationError'],
    ['a bad key id', ringA, where, sealed.replace('.a.', '.a!.'), 'ValidationError'],
    ['not base64url', ringA, where, `${sealed}=`, 'ValidationError'],
  ])('refuses %s', (_case, keyring, at, value, type) => {
    let thrown: unknown;
    try {
      openJobContent(keyring, at, value, LIMIT);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ type, field: type === 'ValidationError' ? 'sealed' : undefined });
    expect(String((thrown as Error).message)).not.toContain('ada@example.com');
  });

  it('refuses an envelope over the size bound before decoding it', () => {
    expect(() => parseSealedEnvelope(sealed, sealed.length - 1)).toThrow(/over the .*-character limit/);
    expect(parseSealedEnvelope(sealed, sealed.length).jobId).toBe('job-1');
  });

  it.each([
    ['the rotated ring (old key kept)', rotated],
    ['the same key under another id', renamed],
  ])('opens with %s', (_case, keyring) => {
    expect(openJobContent(keyring, where, sealed, LIMIT)).toEqual(content);
  });

  it('seals with the current key after a rotation', () => {
    const fresh = sealJobContent(rotated, { ...where, jobId: 'job-2' }, content);
    expect(fresh.split('.')[1]).toBe('b');
    expect(openJobContent(ringB, where, fresh, LIMIT)).toEqual(content);
    expect(() => openJobContent(ringA, where, fresh, LIMIT)).toThrow(/does not hold/);
  });

  it('binds a job id of any characters and no tenant', () => {
    const jobId = 'idem-x.y/z é';
    const envelope = sealJobContent(ringA, { service: 'crm', tenant: undefined, jobId }, { input: null });
    expect(sealedJobId(envelope)).toBe(jobId);
    expect(openJobContent(ringA, { service: 'crm', tenant: undefined }, envelope, LIMIT)).toEqual({
      input: null,
    });
  });
});

describe('sealJobData', () => {
  it('replaces input and metadata by the placeholder and the envelope, keeping the other fields', () => {
    const data = sealJobData(ringA, { ...where, jobId: 'j' }, {
      input: content.input,
      metadata: content.metadata,
      tenant: 'acme',
      enqueueId: 'e',
      idempotencyKey: 'k',
    } as { input: unknown; metadata?: Record<string, unknown>; sealed?: string; tenant: string });
    expect(data).toMatchObject({
      input: SEALED_PLACEHOLDER,
      tenant: 'acme',
      enqueueId: 'e',
      idempotencyKey: 'k',
    });
    expect(data).not.toHaveProperty('metadata');
    expect(openJobContent(ringA, where, data.sealed, LIMIT)).toEqual(content);
  });
});
