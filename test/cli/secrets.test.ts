/**
 * `ferry secrets …` (issue 4) as an operator drives it, in-process (test/helpers/cli.ts; a few runs as the
 * built CLI in a child process, with stdin piped), against a private redis-server and a real downstream. Values go in on stdin or --file; exit codes 0 ok, 1 failure, 2 usage;
 * and no output of any command, in any case, holds a secret value or its base64.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import type { SecretDescription } from '../../src/secrets/catalog.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';
import { SecretStore } from '../../src/secrets/redis-store.ts';
import { base64Forms } from '../../src/secrets/scrub.ts';
import { type CliRun, fromChild, runCliInProcess } from '../helpers/cli.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { runFerry, tempDir, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

const CURRENT = 'crm-current-7f3a9d21';
const STAGED = 'crm-staged-b81c2e07';
const WRONG = 'crm-wrong-55e0d4aa';
const TENANT_VALUE = 'acme-crm-0c4f9e11';
const MAIL = 'mail-env-19ab4c3f';
const VALUES = [CURRENT, STAGED, WRONG, TENANT_VALUE, MAIL];

const KEY1 = randomBytes(32).toString('base64');
const KEY2 = randomBytes(32).toString('base64');

// A careless API that echoes the Authorization header it received: `test` must scrub it from what it prints.
const downstream = await startDownstream((request) => {
  const auth = request.headers.authorization;
  const ok = auth === `Bearer ${CURRENT}` || auth === `Bearer ${STAGED}`;
  return { status: ok ? 200 : 401, body: { ok, youSent: auth } };
});

const servicesFile = await writeServicesFile({
  services: {
    crm: {
      baseUrl: downstream.url,
      auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
      operations: { ping: { method: 'POST', path: '/ping', body: '{{ input }}' } },
    },
    mailer: {
      baseUrl: downstream.url,
      auth: { type: 'apiKey', header: 'x-api-key', value: '{{ secrets.mail_key }}' },
      operations: { send: { method: 'POST', path: '/send' } },
    },
    reports: {
      baseUrl: downstream.url,
      auth: { type: 'bearer', token: '{{ secrets.ghost_key }}' },
      operations: { run: { method: 'POST', path: '/run' } },
    },
  },
});

/** Every run of the file, searched for values once more at the end. */
const runs: CliRun[] = [];

afterAll(() => {
  // Belt and braces: the per-run check below already failed the test that leaked.
  for (const run of runs) expectNoValue(run);
});

function envFor(
  prefix: string,
  extra: Record<string, string | undefined> = {},
): Record<string, string | undefined> {
  return {
    REDIS_URL: redis.url,
    FERRY_PREFIX: prefix,
    FERRY_SERVICES: servicesFile,
    FERRY_SECRETS_KEY: KEY1,
    FERRY_SECRET_MAIL_KEY: MAIL,
    ...extra,
  };
}

/** `ferry secrets <args>`, in-process; `child`: as the built CLI in a child process. */
async function ferry(
  prefix: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string | undefined>; child?: boolean } = {},
): Promise<CliRun> {
  const how = {
    env: envFor(prefix, options.env),
    ...(options.stdin === undefined ? {} : { stdin: options.stdin }),
  };
  let run: CliRun;
  if (options.child === true) {
    run = fromChild(await runFerry(['secrets', ...args], how));
  } else {
    run = await runCliInProcess(['secrets', ...args], how);
  }
  runs.push(run);
  expectNoValue(run);
  return run;
}

function expectNoValue(run: CliRun): void {
  const output = `${run.stdout}\n${run.stderr}`;
  for (const value of VALUES) {
    for (const form of [value, ...base64Forms(value)]) {
      expect(output.includes(form), `${form} (of a secret value) in ${run.output()}`).toBe(false);
    }
  }
}

function store(prefix: string, keys = KEY1): SecretStore {
  return new SecretStore({ connection: redis.client, prefix, keyring: parseKeyring(keys) });
}

/** Every key of the prefix with its serialized value: what "changes nothing" is checked against. */
async function snapshot(prefix: string): Promise<Record<string, string>> {
  const keys = (await redis.client.keys(`${prefix}:*`)).sort();
  const entries = await Promise.all(
    keys.map(async (key) => [key, (await redis.client.dumpBuffer(key))?.toString('base64') ?? ''] as const),
  );
  return Object.fromEntries(entries);
}

describe('ferry secrets keygen', () => {
  it('prints a 32-byte base64 key, without Redis', async () => {
    const run = fromChild(await runFerry(['secrets', 'keygen']));
    runs.push(run);
    expect(run.code, run.output()).toBe(0);
    expect(Buffer.from(run.stdout.trim(), 'base64')).toHaveLength(32);
    expect(() => parseKeyring(run.stdout.trim())).not.toThrow();
  });
});

describe('ferry secrets set and list', () => {
  it('sets from stdin and from --file (one trailing newline dropped) and lists without values', async () => {
    const prefix = uniquePrefix();
    const set = await ferry(prefix, ['set', 'crm_key'], { stdin: `${CURRENT}\n`, child: true });
    expect(set.code, set.output()).toBe(0);
    expect(set.stdout).toBe('crm_key: version 1 is current');

    const file = join(await tempDir('ferry-secret'), 'acme.txt');
    await writeFile(file, `${TENANT_VALUE}\r\n`);
    const fromFile = await ferry(prefix, ['set', 'crm_key', '--tenant', 'acme', '--file', file, '--json']);
    expect(fromFile.code, fromFile.output()).toBe(0);
    expect(JSON.parse(fromFile.stdout)).toEqual({ key: 'tenant/acme/crm_key', version: 1, state: 'current' });

    expect(await store(prefix).read('crm_key')).toBe(CURRENT);
    expect(await store(prefix).read('tenant/acme/crm_key')).toBe(TENANT_VALUE);

    const json = await ferry(prefix, ['list', '--json']);
    expect(json.code, json.output()).toBe(0);
    const list = JSON.parse(json.stdout) as SecretDescription[];
    expect(list.map((item) => item.key)).toEqual(['crm_key', 'ghost_key', 'mail_key', 'tenant/acme/crm_key']);
    expect(list[0]).toMatchObject({
      key: 'crm_key',
      name: 'crm_key',
      usedBy: ['crm'],
      definedIn: ['store'],
      current: { version: 1 },
      previous: [],
    });
    expect(list[1]).toMatchObject({ key: 'ghost_key', usedBy: ['reports'], definedIn: [] });
    expect(list[1]?.current).toBeUndefined();
    expect(list[2]).toMatchObject({ key: 'mail_key', usedBy: ['mailer'], definedIn: ['env'] });
    expect(list[3]).toMatchObject({ name: 'crm_key', tenant: 'acme', usedBy: ['crm'], definedIn: ['store'] });

    const human = await ferry(prefix, ['list']);
    expect(human.code, human.output()).toBe(0);
    const lines = human.stdout.split('\n');
    expect(lines[0]).toMatch(/^KEY\s+CURRENT\s+STAGED\s+PREVIOUS\s+USED BY\s+DEFINED IN$/);
    expect(lines.find((line) => line.startsWith('crm_key '))).toMatch(
      /v1 \d{4}-\d\d-\d\d \d\d:\d\dZ\s+-\s+0\s+crm\s+store/,
    );
    expect(lines.find((line) => line.startsWith('ghost_key '))).toMatch(/nowhere \(!\)$/);
    expect(human.stdout).toContain('(!) ghost_key is referenced by reports but defined in no source');
  });

  it('list works without FERRY_SECRETS_KEY: the store is listed from its metadata', async () => {
    const prefix = uniquePrefix();
    await store(prefix).set('crm_key', CURRENT);
    await store(prefix).stage('crm_key', STAGED);
    const run = await ferry(prefix, ['list', '--json'], { env: { FERRY_SECRETS_KEY: undefined } });
    expect(run.code, run.output()).toBe(0);
    const list = JSON.parse(run.stdout) as SecretDescription[];
    expect(list.find((item) => item.key === 'crm_key')).toMatchObject({
      definedIn: ['store'],
      current: { version: 1 },
      staged: { version: 2 },
    });
    expect(list.find((item) => item.key === 'mail_key')).toMatchObject({ definedIn: ['env'] });
  });

  it.each([
    ['an empty value', ['set', 'crm_key'], '\n', /empty value refused/],
    ['a bad name', ['set', 'Bad Name'], `${CURRENT}\n`, /secret name "Bad Name" must match/],
    ['a bad tenant key', ['promote', 'tenant/acme'], undefined, /tenant\/<tenant>\/<name>/],
    ['a name and a tenant key', ['stage', 'tenant/acme/x', '--tenant', 'acme'], `${CURRENT}\n`, /not both/],
    [
      '--value (there is none)',
      ['set', 'crm_key', '--value', CURRENT],
      undefined,
      /unknown option '--value'/,
    ],
  ])('%s is a usage error: exit 2, one line', async (_label, args, stdin, message) => {
    const prefix = uniquePrefix();
    const run = await ferry(prefix, args, stdin === undefined ? {} : { stdin });
    expect(run.code, run.output()).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(await redis.client.keys(`${prefix}:*`)).toEqual([]);
  });

  it.each([['set'], ['stage'], ['test'], ['reencrypt']])(
    '%s without FERRY_SECRETS_KEY: one line naming it, exit 2',
    async (command) => {
      const prefix = uniquePrefix();
      const args =
        command === 'reencrypt'
          ? [command]
          : command === 'test'
            ? [command, 'crm_key', '--service', 'crm', '--operation', 'ping']
            : [command, 'crm_key'];
      const run = await ferry(prefix, args, { stdin: `${CURRENT}\n`, env: { FERRY_SECRETS_KEY: undefined } });
      expect(run.code, run.output()).toBe(2);
      expect(run.stderr.split('\n')).toHaveLength(1);
      expect(run.stderr).toMatch(/^UsageError: FERRY_SECRETS_KEY .*is not set/);
    },
  );
});

describe('ferry secrets stage → test → promote → rollback', () => {
  it('tests the staged value with a live call that changes nothing, then promotes and rolls back', async () => {
    const prefix = uniquePrefix();
    await store(prefix).set('crm_key', CURRENT);

    const nothing = await ferry(prefix, ['test', 'crm_key', '--service', 'crm', '--operation', 'ping']);
    expect(nothing.code, nothing.output()).toBe(1);
    expect(nothing.stderr).toBe('crm_key: nothing staged (ferry secrets stage crm_key first)');

    const stage = await ferry(prefix, ['stage', 'crm_key'], { stdin: STAGED });
    expect(stage.code, stage.output()).toBe(0);
    expect(stage.stdout).toMatch(/^crm_key: version 2 is staged \(ferry secrets test crm_key --service/);

    const before = await snapshot(prefix);
    const seen = downstream.requests.length;
    const test = await ferry(prefix, [
      'test',
      'crm_key',
      '--service',
      'crm',
      '--operation',
      'ping',
      '--input',
      '{"n":1}',
    ]);
    expect(test.code, test.output()).toBe(0);
    expect(downstream.requests).toHaveLength(seen + 1);
    expect(downstream.requests[seen]?.headers.authorization).toBe(`Bearer ${STAGED}`);
    expect(downstream.requests[seen]?.body).toBe('{"n":1}');
    expect(test.stdout).toMatch(
      /^crm_key \(staged version 2\) → crm\/ping: completed, status 200 in \d+ ms$/m,
    );
    expect(test.stdout).toContain('body: {"ok":true,"youSent":"Bearer [redacted]"}');
    // No job, no dead letter, no breaker record, no change to the secret.
    expect(await snapshot(prefix)).toEqual(before);
    expect(await store(prefix).read('crm_key')).toBe(CURRENT);

    const json = await ferry(
      prefix,
      ['test', 'crm_key', '--service', 'crm', '--operation', 'ping', '--input', '-', '--json'],
      { stdin: '{"n":2}' },
    );
    expect(json.code, json.output()).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      key: 'crm_key',
      version: 2,
      service: 'crm',
      operation: 'ping',
      outcome: 'completed',
      status: 200,
      body: { ok: true, youSent: 'Bearer [redacted]' },
    });

    const promote = await ferry(prefix, ['promote', 'crm_key']);
    expect(promote.code, promote.output()).toBe(0);
    expect(promote.stdout).toBe('crm_key: version 2 is current');
    expect(await store(prefix).read('crm_key')).toBe(STAGED);

    const again = await ferry(prefix, ['promote', 'crm_key']);
    expect(again.code, again.output()).toBe(1);
    expect(again.stderr).toBe('crm_key: no staged version to promote (ferry secrets stage first)');

    const rollback = await ferry(prefix, ['rollback', 'crm_key', '--json']);
    expect(rollback.code, rollback.output()).toBe(0);
    expect(JSON.parse(rollback.stdout)).toEqual({ key: 'crm_key', version: 1, state: 'current' });
    expect(await store(prefix).read('crm_key')).toBe(CURRENT);

    const none = await ferry(prefix, ['rollback', 'crm_key']);
    expect(none.code, none.output()).toBe(1);
    expect(none.stderr).toBe('crm_key: no previous version to roll back to');
  });

  it('a staged value the downstream refuses: exit 1 with AuthenticationError, nothing changed', async () => {
    const prefix = uniquePrefix();
    await store(prefix).set('crm_key', CURRENT);
    await ferry(prefix, ['stage', 'crm_key'], { stdin: `${WRONG}\n` });
    const before = await snapshot(prefix);
    const seen = downstream.requests.length;
    const run = await ferry(prefix, ['test', 'crm_key', '--service', 'crm', '--operation', 'ping']);
    expect(run.code, run.output()).toBe(1);
    expect(downstream.requests[seen]?.headers.authorization).toBe(`Bearer ${WRONG}`);
    expect(run.stdout).toMatch(
      /^crm_key \(staged version 2\) → crm\/ping: failed after \d+ ms: AuthenticationError: /,
    );
    expect(await snapshot(prefix)).toEqual(before);

    const json = await ferry(prefix, [
      'test',
      'crm_key',
      '--service',
      'crm',
      '--operation',
      'ping',
      '--json',
    ]);
    expect(json.code, json.output()).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({
      outcome: 'failed',
      error: { type: 'AuthenticationError', status: 401 },
    });
  });

  it('a tenant key is tested as a job of its tenant', async () => {
    const prefix = uniquePrefix();
    await store(prefix).set('crm_key', CURRENT);
    await ferry(prefix, ['stage', 'crm_key', '--tenant', 'acme'], { stdin: STAGED });
    const seen = downstream.requests.length;
    const run = await ferry(prefix, [
      'test',
      'crm_key',
      '--tenant',
      'acme',
      '--service',
      'crm',
      '--operation',
      'ping',
    ]);
    expect(run.code, run.output()).toBe(0);
    expect(downstream.requests[seen]?.headers.authorization).toBe(`Bearer ${STAGED}`);
    expect(run.stdout).toMatch(/^tenant\/acme\/crm_key \(staged version 1\) → crm\/ping: completed/);
  });

  it.each([
    ['an unknown service', ['--service', 'nope', '--operation', 'ping'], /service: unknown service "nope"/],
    [
      'an unknown operation',
      ['--service', 'crm', '--operation', 'nope'],
      /operation: unknown operation "nope"/,
    ],
    [
      'a service that does not reference the secret',
      ['--service', 'mailer', '--operation', 'send'],
      /does not reference secrets.crm_key/,
    ],
  ])('refuses %s before any call: exit 2', async (_label, args, message) => {
    const prefix = uniquePrefix();
    await store(prefix).set('crm_key', CURRENT);
    await store(prefix).stage('crm_key', STAGED);
    const seen = downstream.requests.length;
    const run = await ferry(prefix, ['test', 'crm_key', ...args]);
    expect(run.code, run.output()).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(downstream.requests).toHaveLength(seen);
  });
});

describe('ferry secrets delete', () => {
  it('off a terminal it needs --yes (exit 2); with it, deletes a version or the whole secret', async () => {
    const prefix = uniquePrefix();
    await store(prefix).set('crm_key', CURRENT);
    await store(prefix).stage('crm_key', STAGED);

    const refused = await ferry(prefix, ['delete', 'crm_key']);
    expect(refused.code, refused.output()).toBe(2);
    expect(refused.stderr).toContain('pass --yes when stdin is not a terminal');
    expect(await store(prefix).read('crm_key')).toBe(CURRENT);

    const current = await ferry(prefix, ['delete', 'crm_key', '--version', '1', '--yes']);
    expect(current.code, current.output()).toBe(1);
    expect(current.stderr).toBe('crm_key: that version is current: roll back or delete the whole secret');

    const staged = await ferry(prefix, ['delete', 'crm_key', '--version', '2', '--yes']);
    expect(staged.code, staged.output()).toBe(0);
    expect(staged.stdout).toBe('crm_key: version 2 deleted');
    expect(await store(prefix).readStaged('crm_key')).toBeUndefined();

    const whole = await ferry(prefix, ['delete', 'crm_key', '--yes', '--json']);
    expect(whole.code, whole.output()).toBe(0);
    expect(JSON.parse(whole.stdout)).toEqual({ key: 'crm_key', state: 'deleted' });
    expect(await store(prefix).info('crm_key')).toBeUndefined();

    const gone = await ferry(prefix, ['delete', 'crm_key', '--yes']);
    expect(gone.code, gone.output()).toBe(1);
    expect(gone.stderr).toBe('crm_key: no such secret');

    const bad = await ferry(prefix, ['delete', 'crm_key', '--version', 'two', '--yes']);
    expect(bad.code, bad.output()).toBe(2);
  });
});

describe('ferry secrets reencrypt', () => {
  it('moves every version to a new first key; a version no listed key opens fails it (exit 1)', async () => {
    const prefix = uniquePrefix();
    await store(prefix).set('crm_key', CURRENT);
    await store(prefix).stage('crm_key', STAGED);
    await store(prefix).set('tenant/acme/crm_key', TENANT_VALUE);

    const run = await ferry(prefix, ['reencrypt', '--json'], {
      env: { FERRY_SECRETS_KEY: `${KEY2},${KEY1}` },
    });
    expect(run.code, run.output()).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ resealed: 3, current: 0, failed: [] });
    // The old key can go now.
    expect(await store(prefix, KEY2).read('crm_key')).toBe(CURRENT);
    expect(await store(prefix, KEY2).readStaged('crm_key')).toBe(STAGED);
    expect(await store(prefix, KEY2).read('tenant/acme/crm_key')).toBe(TENANT_VALUE);

    const human = await ferry(prefix, ['reencrypt'], { env: { FERRY_SECRETS_KEY: KEY2 } });
    expect(human.code, human.output()).toBe(0);
    expect(human.stdout).toMatch(/^reencrypt: 0 resealed, 3 already under key k[0-9a-f]{8}, 0 failed$/);

    const lost = await ferry(prefix, ['reencrypt'], { env: { FERRY_SECRETS_KEY: KEY1 } });
    expect(lost.code, lost.output()).toBe(1);
    expect(lost.stdout).toMatch(/^reencrypt: 0 resealed, 0 already under key k[0-9a-f]{8}, 3 failed$/m);
    expect(lost.stdout).toContain('crm_key version 1: secret "crm_key" version 1 was sealed with master key');
  });
});

describe('ferry secrets --help', () => {
  it.each([
    ['set'],
    ['stage'],
    ['test'],
    ['promote'],
    ['rollback'],
    ['delete'],
    ['list'],
    ['reencrypt'],
    ['keygen'],
  ])('ferry secrets %s --help: usage and examples, exit 0', async (command) => {
    const run = await runCliInProcess(['secrets', command, '--help']);
    expect(run.code, run.output()).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^Usage: ferry secrets ${command}\\b`));
    expect(run.stdout).toMatch(new RegExp(`^Examples:\\n  \\$ .*ferry secrets ${command}\\b`, 'm'));
  });
});
