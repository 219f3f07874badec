/**
 * The smoke version of the chaos suite's attack scenarios (chaos/scenarios/): fewer fuzzed bodies, the whole
 * authorization matrix, one round of the secret scan, and the same promises `npm run chaos` holds them to:
 * no 5xx, nothing accepted that must be refused, no job lost, no authorization rule broken, no secret found
 * in any encoding. Then the scan itself: it must find each encoding it claims to search, or a 0 means nothing.
 */
import { describe, expect, it } from 'vitest';

import type { ScenarioOptions } from '../../chaos/scenario.ts';
import { runApiFuzz } from '../../chaos/scenarios/api-fuzz.ts';
import { runAuthzMatrix, TOKEN_KINDS } from '../../chaos/scenarios/authz-matrix.ts';
import { encodingsOf, runSecretScan, scanText, summarizeHits } from '../../chaos/scenarios/secret-scan.ts';

const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));

function smoke(name: string): ScenarioOptions {
  return {
    smoke: true,
    seed,
    log: (line) => process.stdout.write(`[${name}] ${line}\n`),
  };
}

describe('chaos attack scenarios (smoke)', () => {
  it(`api-fuzz: no 5xx, refusals kept, nothing lost, responsive after (seed ${seed})`, async () => {
    const report = await runApiFuzz(smoke('api-fuzz'));
    // Soft: a failing run shows every broken promise at once, not only the first.
    expect(report.bodies).toBe(300);
    expect(report.enqueued, 'some fuzzed jobs are valid and accepted').toBeGreaterThan(0);
    expect.soft(report.serverErrors, `5xx answers (seed ${seed})`).toEqual({});
    expect.soft(report.unanswered, `requests without an answer (seed ${seed})`).toEqual({});
    expect.soft(report.acceptedButMustRefuse, `accepted what must be refused (seed ${seed})`).toEqual({});
    expect(report.apiExitedEarly).toBe(false);
    expect(report.responsive).toBe(true);
    expect.soft(report.lost, `accepted jobs neither completed nor dead-lettered (seed ${seed})`).toBe(0);
  }, 120_000);

  it('authz-matrix: every route x 8 kinds of token follows the scope rules, never 5xx', async () => {
    const report = await runAuthzMatrix(smoke('authz-matrix'));
    expect(report.routes.length).toBeGreaterThanOrEqual(30);
    expect(report.calls).toBe(report.routes.length * TOKEN_KINDS.length);
    expect(report.unknownRoutes, 'routes the matrix has no rule for').toEqual([]);
    expect(report.violations).toEqual([]);
    expect(report.serverErrors).toBe(0);
  }, 120_000);

  it(`secret-scan: no planted secret anywhere, in any encoding (seed ${seed})`, async () => {
    const report = await runSecretScan(smoke('secret-scan'));
    expect(report.searched.redisKeys).toBeGreaterThan(0);
    expect(report.searched.files).toBeGreaterThan(0);
    expect(report.searched.logLines).toBeGreaterThan(0);
    expect(report.searched.answers).toBeGreaterThan(0);
    expect(report.deadLettered, 'some jobs end dead-lettered').toBeGreaterThan(0);
    expect(report.lost).toBe(0);
    expect(report.serverErrors).toBe(0);
    expect(summarizeHits(report.hits)).toEqual([]);
  }, 120_000);
});

describe('the secret scan finds what it claims to search', () => {
  const secret = 'Kq83hZx0LmPa !\'()~+/=  éAbCdEf"\\üXyZ123';
  const secrets = [{ name: 's', needles: encodingsOf(secret) }];
  const found = (text: string): string[] => scanText(text, 'here', secrets).map((hit) => hit.encoding);

  it.each([
    ['raw', `before ${secret} after`],
    ['json', JSON.stringify({ message: `x ${secret}` })],
    ['json-in-json', JSON.stringify({ data: JSON.stringify({ message: secret }) })],
    ['uri', `/path?key=${encodeURIComponent(secret)}&x=1`],
    ['form', `/path?${new URLSearchParams({ api_key: secret }).toString()}`],
    ['whitespace-collapsed', `excerpt: ${secret.replace(/\s+/g, ' ')}`],
    ['base64@0', `Basic ${Buffer.from(`abc${secret}`).toString('base64')}`],
    ['base64@1', `Basic ${Buffer.from(`:${secret}`).toString('base64')}`],
    ['base64@2', `Basic ${Buffer.from(`user:${secret}`).toString('base64')}`],
    // base64url differs from base64 only where a `+` or `/` would be: at the alignment(s) where it does.
    ...[0, 1, 2]
      .filter((lead) => encodingsOf(secret).some((needle) => needle.encoding === `base64url@${lead}`))
      .map((lead) => [
        `base64url@${lead}`,
        Buffer.from(`${'x'.repeat(lead)}${secret}`).toString('base64url'),
      ]),
    ['prefix(20/39)', `${'x'.repeat(280)}${secret.slice(0, 20)}…`],
  ])('%s', (encoding, text) => {
    expect(found(text)).toContain(encoding);
  });

  it('finds nothing in text without the secret, nor in a prefix shorter than 8', () => {
    expect(found(`nothing here ${secret.slice(0, 7)} and ${secret.slice(1)}`)).toEqual([]);
  });

  it('never names a place with the secret in it', () => {
    const hits = scanText(secret, `key ${secret}`, secrets);
    expect(hits.length).toBeGreaterThan(0);
    for (const hit of hits) expect(hit.where).not.toContain(secret.slice(0, 8));
  });
});
