/**
 * `ferry dlq show --reveal` and `ferry dlq replay` of a sealed dead letter (issue 17 item 5), the reveals
 * in-process (test/helpers/cli.ts), show and replay with the built CLI: reveal opens it with
 * FERRY_SECRETS_KEY and writes one audit line (never the plaintext); without the key it is refused in one
 * line; replay keeps it sealed and the replayed job completes with the right input.
 */
import { randomBytes } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { SEALED_PLACEHOLDER } from '../../src/core/job.ts';
import { replayJobId } from '../../src/ops/dead-letter-replay.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';
import { runCliInProcess } from '../helpers/cli.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { runFerry, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';

const redis = await startRedis();
const KEY = randomBytes(32).toString('base64');
const keyring = parseKeyring(`k1:${KEY}`);

function services(url: string): Record<string, unknown> {
  return {
    services: {
      vault: {
        baseUrl: url,
        timeoutMs: 5_000,
        sensitive: true,
        retry: { attempts: 1 },
        operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
      },
    },
  };
}

describe('ferry dlq show --reveal / replay of a sealed dead letter', () => {
  it('reveals with the key and an audit line, refuses without it, and replays sealed', async () => {
    let accept = false;
    const downstream = await startDownstream(() =>
      accept ? { status: 201, body: { id: 'x' } } : { status: 400, body: { error: 'refused' } },
    );
    const prefix = uniquePrefix();
    const doc = services(downstream.url);
    const ferry = await createTestFerry(redis, { services: doc, prefix, pool: { keyring } });
    const secret = `ada-${randomBytes(6).toString('hex')}@example.com`;
    const meta = `order-${randomBytes(6).toString('hex')}`;
    const job = await ferry.producer.enqueue({
      service: 'vault',
      operation: 'create',
      tenant: 'acme',
      input: { email: secret },
      metadata: { ref: meta },
    });
    const view = await ferry.producer.waitFor('vault', job.id, { timeoutMs: 20_000 });
    expect(view.state).toBe('dead_lettered');
    const id = view.deadLetterId!;
    const env = {
      REDIS_URL: redis.url,
      FERRY_SERVICES: await writeServicesFile(doc),
      FERRY_PREFIX: prefix,
      FERRY_SECRETS_KEY: `k1:${KEY}`,
      FERRY_OPERATOR: 'alice',
    };
    const forms = new Map([...secretForms(secret), ...secretForms(meta)]);

    const plain = await runFerry(['dlq', 'show', id], { env: { ...env, FERRY_SECRETS_KEY: undefined } });
    expect(plain.code).toBe(0);
    expect(plain.stdout).toContain(`input: "${SEALED_PLACEHOLDER}"`);
    expect(plain.stdout).toContain('sealed: input and metadata are sealed');

    const refused = await runCliInProcess(['dlq', 'show', id, '--reveal'], {
      env: { ...env, FERRY_SECRETS_KEY: undefined },
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toEqual([
      'ConfigurationError: --reveal opens sealed data with FERRY_SECRETS_KEY (or FERRY_SECRETS_KEY_FILE), which is not set',
    ]);

    const wrongKey = await runCliInProcess(['dlq', 'show', id, '--reveal'], {
      env: { ...env, FERRY_SECRETS_KEY: `k2:${randomBytes(32).toString('base64')}` },
    });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain('ConfigurationError: sealed: sealed with master key "k1"');

    const revealed = await runCliInProcess(['dlq', 'show', id, '--reveal', '--json'], { env });
    expect(revealed.code).toBe(0);
    const detail = JSON.parse(revealed.stdout) as Record<string, unknown>;
    expect(detail).toMatchObject({ id, input: { email: secret }, metadata: { ref: meta }, tenant: 'acme' });
    expect(detail).not.toHaveProperty('sealed');
    const audit = revealed.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(audit).toEqual([
      expect.objectContaining({
        audit: 'dlq.reveal',
        outcome: 'revealed',
        deadLetterId: id,
        service: 'vault',
        operation: 'create',
        tenant: 'acme',
        operator: 'alice',
        osUser: expect.any(String) as unknown,
        time: expect.any(Number) as unknown,
      }),
    ]);
    const leaks = findSecretForms('sealed value', forms, {
      'audit stderr': revealed.stderr,
      'refused stderr': refused.stderr + wrongKey.stderr,
      'plain show': plain.stdout,
    });
    expect(leaks).toEqual([]);

    // Replay needs no key, and keeps the job sealed; the worker opens it.
    accept = true;
    const replay = await runFerry(['dlq', 'replay', id], {
      env: { ...env, FERRY_SECRETS_KEY: undefined },
    });
    expect(replay.code).toBe(0);
    const replayed = await ferry.producer.waitFor('vault', replayJobId(id), { timeoutMs: 20_000 });
    expect(replayed).toMatchObject({ state: 'completed', sealed: true });
    const stored = JSON.parse(
      (await redis.client.hget(`${prefix}:{vault}:${replayJobId(id)}`, 'data'))!,
    ) as Record<string, unknown>;
    expect(stored).toMatchObject({ input: SEALED_PLACEHOLDER, tenant: 'acme' });
    expect(stored).not.toHaveProperty('metadata');
    expect(downstream.requests.map((r) => JSON.parse(r.body) as unknown)).toEqual([
      { email: secret },
      { email: secret },
    ]);
    await downstream.close();
  });

  it('a worker serving a sensitive operation does not start without FERRY_SECRETS_KEY', async () => {
    const result = await runFerry(['worker'], {
      env: {
        REDIS_URL: redis.url,
        FERRY_SERVICES: await writeServicesFile(services('http://127.0.0.1:9')),
        FERRY_PREFIX: uniquePrefix(),
        FERRY_SECRETS_KEY: undefined,
        FERRY_SECRETS_KEY_FILE: undefined,
      },
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(
      'services.vault.operations.create is sensitive (sealed input), and FERRY_SECRETS_KEY is not set',
    );
  });
});
