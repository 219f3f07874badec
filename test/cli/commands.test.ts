/**
 * The `ferry` CLI as ops scripts drive it (DESIGN §6): output, and exit codes 0 ok, 1 failure, 2 usage;
 * errors are one `type: message` line, never a stack. Most cases run the program in-process
 * (test/helpers/cli.ts); a few per command group run the built CLI as a child process (runFerry).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { JobData } from '../../src/core/job.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import type { JobView } from '../../src/index.ts';
import { runCliInProcess as ferry } from '../helpers/cli.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { ROOT, runFerry, startWorker, tempDir, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const FIXTURES = join(ROOT, 'test', 'fixtures', 'services');
const fixture = (name: string): string => join(FIXTURES, name);

/** A stack trace line, as Node prints it. */
const STACK_LINE = /^\s+at /m;

/** The `# expect: <line>` comments a fixture starts with; `{file}` stands for its path. */
async function expectedIssues(path: string): Promise<string[]> {
  const expected: string[] = [];
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    if (!line.startsWith('# expect: ')) break;
    expected.push(line.slice('# expect: '.length).replaceAll('{file}', path));
  }
  return expected;
}

describe('ferry config check', () => {
  it('a valid file: prints ok with its services, exit 0', async () => {
    const path = fixture('valid.yaml');
    const run = await runFerry(['config', 'check', path]);
    expect(run.code, run.process.output()).toBe(0);
    expect(run.stdout).toBe(`ok: ${path} (2 service(s): crm, mailer)`);
    expect(run.stderr).toBe('');
  });

  it.each(['invalid-attempts.yaml', 'invalid-many.yaml', 'invalid-yaml-syntax.yaml'])(
    '%s: prints every problem with its path, exit 1',
    async (name) => {
      const path = fixture(name);
      const expected = await expectedIssues(path);
      expect(expected.length).toBeGreaterThan(0);
      const run = await ferry(['config', 'check', path]);
      expect(run.code, run.output()).toBe(1);
      expect(run.stdout).toBe('');
      const lines = run.stderr.split('\n');
      expect(lines[0]).toMatch(new RegExp(`^${escape(path)}: \\d+ problem\\(s\\)$`));
      for (const issue of expected) expect(lines.map((line) => line.trim())).toContain(issue);
      expect(run.stderr).not.toMatch(STACK_LINE);
    },
  );

  it('with no argument it checks FERRY_SERVICES; --json gives the issues as data', async () => {
    const path = fixture('invalid-attempts.yaml');
    const run = await ferry(['config', 'check', '--json'], { env: { FERRY_SERVICES: path } });
    expect(run.code, run.output()).toBe(1);
    expect(JSON.parse(run.stdout)).toEqual({
      file: path,
      ok: false,
      issues: [{ path: 'services.crm.retry.attempts', message: 'must be an integer >= 1' }],
    });
  });

  it('a missing file: one clear line naming it, exit 1', async () => {
    const path = join(FIXTURES, 'does-not-exist.yaml');
    const run = await ferry(['config', 'check', path]);
    expect(run.code, run.output()).toBe(1);
    expect(run.stderr).toContain(`${path}: services file not found`);
    expect(run.stderr).not.toMatch(STACK_LINE);
  });
});

describe('usage errors exit 2', () => {
  it.each([
    ['an unknown command', ['bogus'], /unknown command 'bogus'/],
    ['an unknown option', ['worker', '--bogus'], /unknown option '--bogus'/],
    ['a missing argument', ['enqueue', 'svc'], /missing required argument 'operation'/],
  ])('%s', async (_name, args, message) => {
    const run = await ferry(args);
    expect(run.code, run.output()).toBe(2);
    expect(run.stderr).toMatch(message);
    // Commander shows the usage after the error, so the caller sees what it should have typed.
    expect(run.stderr).toContain('Usage: ferry');
  });

  it('ferry worker without REDIS_URL: exit 2 and says what to set', async () => {
    const run = await runFerry(['worker'], { env: { FERRY_SERVICES: fixture('valid.yaml') } });
    expect(run.code, run.process.output()).toBe(2);
    expect(run.stderr.split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/REDIS_URL \(or REDIS_CLUSTER_NODES or REDIS_SENTINELS\) is not set/);
    expect(run.stderr).toMatch(/ferry dev/);
    expect(run.stderr).not.toMatch(STACK_LINE);
  });
});

const downstream = await startDownstream((request) =>
  request.url === '/refuse'
    ? { status: 422, body: { error: 'refused on purpose' } }
    : { status: 201, body: { id: 7, received: JSON.parse(request.body) as unknown } },
);
const services = {
  services: {
    svc: {
      baseUrl: downstream.url,
      timeoutMs: 5_000,
      retry: { attempts: 2, backoff: { delayMs: 50, maxDelayMs: 100 } },
      headers: { 'X-Job-Id': '{{ job.id }}' },
      operations: {
        create: { method: 'POST', path: '/things', body: '{{ input }}' },
        refuse: { method: 'POST', path: '/refuse', body: '{{ input }}' },
      },
    },
  },
};
const servicesFile = await writeServicesFile(services);

describe('ferry enqueue', () => {
  it('--wait against a running worker: prints the result, exit 0; a dead-lettered job exits 1', async () => {
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix: uniquePrefix() });
    const worker = await startWorker(env);

    const [json, human, dead] = await Promise.all([
      runFerry(['enqueue', 'svc', 'create', '--input', '{"email":"a@b.c"}', '--wait', '--json'], { env }),
      runFerry(['enqueue', 'svc', 'create', '--input', '{"n":2}', '--wait'], { env }),
      runFerry(['enqueue', 'svc', 'refuse', '--input', '{"n":3}', '--wait'], { env }),
    ]);

    expect(json.code, json.process.output()).toBe(0);
    const view = JSON.parse(json.stdout) as JobView;
    expect(view).toMatchObject({
      service: 'svc',
      operation: 'create',
      state: 'completed',
      attempts: 1,
      result: { status: 201, body: { id: 7, received: { email: 'a@b.c' } }, attempts: 1 },
    });
    const call = downstream.requests.find((request) => request.headers['x-job-id'] === view.id);
    expect(call?.body).toBe('{"email":"a@b.c"}');

    expect(human.code, human.process.output()).toBe(0);
    const [headline, ...body] = human.stdout.split('\n');
    expect(headline).toMatch(/^completed: svc\/\S+ status 201 after 1 attempt\(s\)$/);
    expect(JSON.parse(body.join('\n'))).toMatchObject({ received: { n: 2 } });

    expect(dead.code, dead.process.output()).toBe(1);
    expect(dead.stdout).toMatch(/^dead-lettered: svc\/\S+ ClientError: downstream answered 422/);
    expect(dead.stdout).toMatch(/\ndead letter: dl-svc\.\S+\.\d+$/);
    expect(dead.stderr).toBe('');

    worker.terminate();
    expect((await worker.waitForExit()).code).toBe(0);
  }, 60_000);

  it.each([
    ['service', ['nope', 'create'], 'service: unknown service "nope"'],
    ['operation', ['svc', 'nope'], 'operation: unknown operation "nope" for service "svc"'],
  ])('an unknown %s: one line naming it, exit 2, nothing enqueued', async (_what, args, message) => {
    const prefix = uniquePrefix();
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix });
    const run = await ferry(['enqueue', ...args, '--input', '{}'], { env });
    expect(run.code, run.output()).toBe(2);
    expect(run.stderr).toBe(`ValidationError: ${message}`);
    expect(run.stdout).toBe('');
    expect(await redis.client.keys(`${prefix}:*`)).toEqual([]);
  });

  it('--priority and --metadata (JSON or @file) reach the job', async () => {
    const prefix = uniquePrefix();
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix });
    const file = join(await tempDir(), 'metadata.json');
    await writeFile(file, '{"source":"file"}');
    const inline = await ferry(
      ['enqueue', 'svc', 'create', '--priority', '7', '--metadata', '{"source":"cli"}', '--json'],
      { env },
    );
    const fromFile = await ferry(['enqueue', 'svc', 'create', '--metadata', `@${file}`, '--json'], { env });
    expect(inline.code, inline.output()).toBe(0);
    expect(fromFile.code, fromFile.output()).toBe(0);
    const queue = new Queue<JobData>(serviceQueueName('svc'), { connection: redis.client, prefix });
    onTestFinished(() => queue.close());
    const first = await queue.getJob((JSON.parse(inline.stdout) as { id: string }).id);
    expect(first?.opts.priority).toBe(7);
    expect(first?.data.metadata).toEqual({ source: 'cli' });
    const second = await queue.getJob((JSON.parse(fromFile.stdout) as { id: string }).id);
    expect(second?.data.metadata).toEqual({ source: 'file' });
    expect(second?.opts.priority ?? 0).toBe(0);
  });

  it.each([
    ['priority -1', ['--priority', '-1'], /^UsageError: --priority: "-1" is not a whole number$/],
    ['priority 1.5', ['--priority', '1.5'], /^UsageError: --priority/],
    ['an empty priority', ['--priority', ''], /^UsageError: --priority/],
    ['priority over 2^21', ['--priority', '2097153'], /^ValidationError: priority/],
    ['metadata not an object', ['--metadata', '[1]'], /^ValidationError: metadata/],
    ['metadata not JSON', ['--metadata', '{oops'], /^UsageError: --metadata: not valid JSON/],
    [
      'metadata over FERRY_MAX_METADATA_BYTES',
      ['--metadata', '{"note":"' + 'x'.repeat(100) + '"}'],
      /^ValidationError: metadata: \d+ bytes, over the 64-byte limit$/,
    ],
    [
      'metadata @missing file',
      ['--metadata', '@/nonexistent/meta.json'],
      /^UsageError: --metadata: cannot read "\/nonexistent\/meta.json" \(no such file\)$/,
    ],
    [
      'input @missing file',
      ['--input', '@/nonexistent/missing.json'],
      /^UsageError: --input: cannot read "\/nonexistent\/missing.json" \(no such file\)$/,
    ],
  ])('enqueue with %s: one line, exit 2, nothing enqueued', async (_option, args, line) => {
    const prefix = uniquePrefix();
    const env = {
      ...workerEnv({ redisUrl: redis.url, servicesFile, prefix }),
      FERRY_MAX_METADATA_BYTES: '64',
    };
    const run = await ferry(['enqueue', 'svc', 'create', ...args], { env });
    expect(run.code, run.output()).toBe(2);
    expect(run.stderr.split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(line);
    expect(run.stderr).not.toContain('ENOENT');
    expect(await redis.client.keys(`${prefix}:*`)).toEqual([]);
  });

  it('--verbose: the error line once, then the stack frames', async () => {
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix: uniquePrefix() });
    const run = await ferry(['--verbose', 'enqueue', 'nope', 'create', '--input', '{}'], { env });
    expect(run.code, run.output()).toBe(2);
    const lines = run.stderr.split('\n');
    expect(lines[0]).toBe('ValidationError: service: unknown service "nope"');
    expect(lines.filter((l) => l.includes('unknown service "nope"'))).toHaveLength(1);
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.slice(1).every((l) => STACK_LINE.test(l))).toBe(true);
  });

  it('input that is not JSON: exit 2, naming --input', async () => {
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix: uniquePrefix() });
    const run = await ferry(['enqueue', 'svc', 'create', '--input', '{not json'], { env });
    expect(run.code, run.output()).toBe(2);
    expect(run.stderr).toMatch(/^UsageError: --input: not valid JSON/);
    expect(run.stderr).not.toMatch(STACK_LINE);
  });
});

describe('--help', () => {
  it('ferry --help lists the commands, exit 0; --version prints it', async () => {
    const [help, version] = await Promise.all([runFerry(['--help']), runFerry(['--version'])]);
    expect(help.code, help.process.output()).toBe(0);
    for (const command of ['dev', 'worker', 'enqueue', 'config']) {
      expect(help.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
    }
    expect(version.code).toBe(0);
    expect(version.stdout).toBe('0.1.0');
  });

  it.each([
    ['dev', 'ferry dev [options]'],
    ['worker', 'ferry worker [options]'],
    ['enqueue', 'ferry enqueue [options] <service> <operation>'],
    ['config check', 'ferry config check [options] [file]'],
    ['config', 'ferry config [options] [command]'],
    ['dlq reindex', 'ferry dlq reindex [options]'],
    ['breakers open', 'ferry breakers open [options] <service>'],
    ['breakers close', 'ferry breakers close [options] <service>'],
    ['queues pause', 'ferry queues pause [options] <service>'],
    ['queues resume', 'ferry queues resume [options] <service>'],
  ])('ferry %s --help: usage and examples, exit 0', async (command, usage) => {
    const run = await ferry([...command.split(' '), '--help']);
    expect(run.code, run.output()).toBe(0);
    expect(run.stdout).toContain(`Usage: ${usage}`);
    const examples = run.stdout.split('Examples:')[1];
    expect(examples, 'an Examples: section').toBeDefined();
    // Each example is a runnable command line of this very command.
    expect(examples).toMatch(new RegExp(`^\\s+\\$ .*ferry ${command}\\b`, 'm'));
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
