import { describe, expect, it } from 'vitest';

import { ConfigurationError } from '../../src/core/errors.ts';
import { resolveSecrets, type SecretResolver } from '../../src/secrets/resolver.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';

const table: Record<string, string> = { a: 'value-of-a', b: 'value-of-b', c: 'value-of-c' };
const syncResolver: SecretResolver = { resolve: (name) => table[name] };
const asyncResolver: SecretResolver = { resolve: async (name) => table[name] };
/** Answers `b` asynchronously only: the switch from the synchronous path happens mid-list. */
const mixedResolver: SecretResolver = {
  resolve: (name) => (name === 'b' ? Promise.resolve(table[name]) : table[name]),
};

describe('resolveSecrets', () => {
  it('answers synchronously (no promise) when the resolver does', () => {
    const result = resolveSecrets(syncResolver, ['a', 'b'], undefined);
    expect(result).toBeInstanceOf(Map);
    expect(Object.fromEntries(result as Map<string, string>)).toEqual({ a: 'value-of-a', b: 'value-of-b' });
  });

  it.each([
    ['async', asyncResolver],
    ['mixed', mixedResolver],
  ])('resolves every name with an %s resolver, in order', async (_, resolver) => {
    const result = resolveSecrets(resolver, ['a', 'b', 'c'], undefined);
    expect(result).toBeInstanceOf(Promise);
    expect([...(await result)]).toEqual([
      ['a', 'value-of-a'],
      ['b', 'value-of-b'],
      ['c', 'value-of-c'],
    ]);
  });

  it('hands every value to the observer, so it is scrubbed from what Ferry stores', async () => {
    const scrubber = new Scrubber();
    await resolveSecrets(mixedResolver, ['a', 'b', 'c'], undefined, scrubber);
    expect(scrubber.scrub('a=value-of-a b=value-of-b c=value-of-c')).toBe(
      'a=[redacted] b=[redacted] c=[redacted]',
    );
  });

  it('a missing secret is a ConfigurationError naming it and the tenant, never its neighbours\u2019 values', async () => {
    let thrown: unknown;
    try {
      void resolveSecrets(syncResolver, ['a', 'missing'], 'acme'); // throws before returning anything
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigurationError);
    expect((thrown as Error).message).toBe('unknown secret "missing" (tenant "acme")');
    const rejected = resolveSecrets(mixedResolver, ['b', 'missing'], undefined);
    await expect(rejected).rejects.toBeInstanceOf(ConfigurationError);
    await expect(rejected).rejects.toThrow('unknown secret "missing"');
    await expect(rejected).rejects.not.toThrow(/value-of/);
  });
});
