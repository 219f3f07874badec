/**
 * `ferry secrets …` (DESIGN §5, §6; issue 4): the encrypted store's life cycle from a shell. Values come from
 * stdin (a hidden prompt on a terminal) or `--file`, never from argv: a command line ends up in shell history
 * and in `ps`. No output and no error message ever holds a value; `test` prints the downstream's answer only
 * after scrubbing the candidate value (and every other secret and token the call used) out of it.
 */
import { access, readFile } from 'node:fs/promises';
import { text } from 'node:stream/consumers';

import type { Command } from 'commander';

import type { Env } from '../../core/env.ts';
import type { Logger } from '../../core/logger.ts';
import type { RedisClient } from '../../core/redis.ts';
import type { ServicesConfig } from '../../core/services/types.ts';
import type { SecretTestOutcome } from '../../ops/secret-test.ts';
import type { SecretDescription } from '../../secrets/catalog.ts';
import type { Keyring } from '../../secrets/crypto.ts';
import type { SecretChange, SecretStore, VersionInfo } from '../../secrets/redis-store.ts';
import { type CliIo, processIo } from '../io.ts';
import { EXIT_FAILURE, printJson, UsageError } from '../output.ts';

interface KeyOptions {
  tenant?: string;
  json?: boolean;
}

interface PutOptions extends KeyOptions {
  file?: string;
}

interface TestOptions extends KeyOptions {
  service: string;
  operation: string;
  input?: string;
}

interface DeleteOptions extends KeyOptions {
  version?: string;
  yes?: boolean;
}

const ENVIRONMENT = `
Environment: REDIS_URL (or REDIS_CLUSTER_NODES or REDIS_SENTINELS), FERRY_PREFIX, FERRY_SECRETS_KEY or FERRY_SECRETS_KEY_FILE
(set, stage, test, reencrypt), FERRY_SECRETS_DIR and FERRY_SECRET_<NAME> (list, test), FERRY_SERVICES (list,
test): the same as the worker's.`;

export function registerSecretsCommand(program: Command, io: CliIo = processIo()): void {
  const secrets = program
    .command('secrets')
    .description(
      'encrypted secret store: set, stage, test, promote, rollback, delete, list (values never shown)',
    )
    .addHelpText(
      'after',
      `
Rotation without disruption:
  $ ferry secrets stage crm_key < new-key.txt
  $ ferry secrets test crm_key --service crm --operation getContact --input '{"id":1}'
  $ ferry secrets promote crm_key                # every worker uses it within a second
  $ ferry secrets rollback crm_key               # if something still breaks
${ENVIRONMENT}`,
    );

  for (const mode of ['set', 'stage'] as const) {
    secrets
      .command(`${mode} <name>`)
      .description(
        mode === 'set'
          ? 'store a new version that is current at once (value from stdin or --file)'
          : 'store a new version that nothing uses until it is promoted (value from stdin or --file)',
      )
      .option('--tenant <tenant>', "the tenant's own value (key tenant/<tenant>/<name>)")
      .option('--file <path>', 'read the value from this file (one trailing newline dropped)')
      .option('--json', 'print {key, version, state} as JSON')
      .addHelpText(
        'after',
        `
The value is read from stdin (on a terminal: a prompt that does not echo) or from --file; one trailing
newline is dropped. There is no --value: a command line lands in shell history.

Examples:
  $ ferry secrets ${mode} crm_key                      # prompts
  $ printf %s "$CRM_KEY" | ferry secrets ${mode} crm_key
  $ ferry secrets ${mode} crm_key --tenant acme --file ./acme-crm-key.txt
${ENVIRONMENT}`,
      )
      .action(async (name: string, options: PutOptions) => {
        const key = await parseKey(name, options.tenant);
        const { env, keyring } = await readSettings();
        requireKeyring(keyring, `secrets ${mode}`);
        const value = await readValue(io, key, options.file);
        await withStore(env, keyring, async (store) => {
          const version = mode === 'set' ? await store.set(key, value) : await store.stage(key, value);
          const state = mode === 'set' ? 'current' : 'staged';
          if (options.json === true) printJson({ key, version, state }, io.stdout);
          else if (mode === 'set') io.stdout.write(`${key}: version ${version} is current\n`);
          else
            io.stdout.write(
              `${key}: version ${version} is staged (ferry secrets test ${key} --service <service> ` +
                `--operation <operation>, then ferry secrets promote ${key})\n`,
            );
        });
      });
  }

  secrets
    .command('test <name>')
    .description('one live call with the staged version; changes nothing (no job, no breaker state)')
    .requiredOption('--service <service>', 'the service to call (its templates must reference the secret)')
    .requiredOption('--operation <operation>', 'the operation to call')
    .option('--input <json>', 'job input: JSON, @file, or - for stdin')
    .option('--tenant <tenant>', "test the tenant's own staged value, as a job of that tenant")
    .option('--json', 'print the outcome as JSON')
    .addHelpText(
      'after',
      `
Exit 0 when the call completed, 1 when it failed (or nothing is staged). The body is shown scrubbed of every
secret value and token the call used.

Examples:
  $ ferry secrets test crm_key --service crm --operation getContact --input '{"id":1}'
  $ ferry secrets test crm_key --tenant acme --service crm --operation createContact --input @contact.json --json
${ENVIRONMENT}`,
    )
    .action(async (name: string, options: TestOptions) => {
      const key = await parseKey(name, options.tenant);
      const { env, keyring } = await readSettings();
      requireKeyring(keyring, 'secrets test');
      const config = await loadConfig(io, env, true);
      const input = options.input === undefined ? undefined : await readInput(io, options.input);
      await withStore(env, keyring, async (store, connection) => {
        const [{ testStagedSecret }, { createSecretProbe }, { createSecretsRuntime }, { parseSecretKey }] =
          await Promise.all([
            import('../../ops/secret-test.ts'),
            import('../../worker/secret-probe.ts'),
            import('../../secrets/setup.ts'),
            import('../../secrets/names.ts'),
          ]);
        const info = await store.info(key);
        const value = await store.readStaged(key);
        if (info?.staged === undefined || value === undefined) {
          io.stderr.write(
            `${key}: ${info === undefined ? 'no such secret' : 'nothing staged'} (ferry secrets stage ${key} first)\n`,
          );
          io.exitCode = EXIT_FAILURE;
          return;
        }
        const runtime = await createSecretsRuntime({
          env,
          connection,
          prefix: env.FERRY_PREFIX,
          logger: await silentLogger(),
          watch: false,
        });
        let outcome: SecretTestOutcome;
        try {
          const { tenant } = parseSecretKey(key);
          outcome = await testStagedSecret({
            config,
            resolver: runtime.resolver,
            probe: createSecretProbe(),
            key,
            value,
            service: options.service,
            operation: options.operation,
            ...(input === undefined ? {} : { input }),
            ...(tenant === undefined ? {} : { tenant }),
          });
        } finally {
          runtime.close();
        }
        printOutcome(io, key, info.staged.version, options, outcome);
        if (outcome.outcome !== 'completed') io.exitCode = EXIT_FAILURE;
      });
    });

  for (const change of ['promote', 'rollback'] as const) {
    secrets
      .command(`${change} <name>`)
      .description(
        change === 'promote'
          ? 'make the staged version current (every worker uses it within a second)'
          : 'make the previous version current again (the current one is deleted)',
      )
      .option('--tenant <tenant>', "the tenant's own value (key tenant/<tenant>/<name>)")
      .option('--json', 'print {key, version, state} as JSON')
      .addHelpText(
        'after',
        `
Exit 1 when there is nothing to ${change === 'promote' ? 'promote (nothing staged)' : 'roll back to (no previous version)'}.

Examples:
  $ ferry secrets ${change} crm_key
  $ ferry secrets ${change} tenant/acme/crm_key --json
${ENVIRONMENT}`,
      )
      .action(async (name: string, options: KeyOptions) => {
        const key = await parseKey(name, options.tenant);
        const { env } = await readSettings();
        await withStore(env, undefined, async (store) => {
          const result = change === 'promote' ? await store.promote(key) : await store.rollback(key);
          report(
            io,
            key,
            result,
            options,
            (version) => `version ${version} is current`,
            (version) => ({ version, state: 'current' }),
          );
        });
      });
  }

  secrets
    .command('delete <name>')
    .description('delete a secret with every version, or one version that is not current')
    .option('--tenant <tenant>', "the tenant's own value (key tenant/<tenant>/<name>)")
    .option('--version <n>', 'delete only this version (a staged or an earlier one)')
    .option('--yes', 'do not ask for confirmation (required when stdin is not a terminal)')
    .option('--json', 'print {key, version?, state} as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry secrets delete old_crm_key
  $ ferry secrets delete crm_key --version 3 --yes
${ENVIRONMENT}`,
    )
    .action(async (name: string, options: DeleteOptions) => {
      const key = await parseKey(name, options.tenant);
      const version = options.version === undefined ? undefined : parseVersion(options.version);
      const what = version === undefined ? `${key} and every version of it` : `version ${version} of ${key}`;
      if (options.yes !== true) {
        if (io.stdin.isTTY !== true) {
          throw new UsageError(`delete asks for confirmation: pass --yes when stdin is not a terminal`);
        }
        if (!(await confirm(io, `delete ${what}? [y/N] `))) {
          io.stderr.write(`${key}: not deleted\n`);
          io.exitCode = EXIT_FAILURE;
          return;
        }
      }
      const { env } = await readSettings();
      await withStore(env, undefined, async (store) => {
        const result = await store.delete(key, version);
        report(
          io,
          key,
          result,
          options,
          () => (version === undefined ? 'deleted (every version)' : `version ${version} deleted`),
          () => (version === undefined ? { state: 'deleted' } : { version, state: 'deleted' }),
        );
      });
    });

  secrets
    .command('list')
    .description('every secret: versions, dates, which services use it, where it is defined (never values)')
    .option('--json', 'print the list as JSON')
    .addHelpText(
      'after',
      `
Lists every key in the store and every name a service references; a referenced name that no source
defines is flagged. Works without FERRY_SECRETS_KEY (nothing is decrypted).

Examples:
  $ ferry secrets list
  $ ferry secrets list --json | jq '.[] | select(.definedIn == [])'
${ENVIRONMENT}`,
    )
    .action(async (options: { json?: boolean }) => {
      const { env, keyring } = await readSettings();
      const config = await loadConfig(io, env, false);
      await withStore(env, keyring, async (store, connection) => {
        const [{ describeSecrets }, { createSecretsRuntime }, { DEFAULT_SECRETS_SOURCES }] =
          await Promise.all([
            import('../../secrets/catalog.ts'),
            import('../../secrets/setup.ts'),
            import('../../core/env.ts'),
          ]);
        // Without a master key the store is listed from its metadata, and the other sources still count.
        const order = (env.FERRY_SECRETS_SOURCES ?? DEFAULT_SECRETS_SOURCES).split(',');
        const kinds = keyring === undefined ? order.filter((kind) => kind !== 'store') : order;
        const runtime =
          kinds.length === 0
            ? undefined
            : await createSecretsRuntime({
                env: { ...env, FERRY_SECRETS_SOURCES: kinds.join(',') },
                processEnv: process.env,
                connection,
                prefix: env.FERRY_PREFIX,
                logger: await silentLogger(),
                watch: false,
              });
        try {
          const list = await describeSecrets({ store, sources: runtime?.sources ?? [], config });
          if (options.json === true) printJson(list, io.stdout);
          else printTable(io, list);
        } finally {
          runtime?.close();
        }
      });
    });

  secrets
    .command('reencrypt')
    .description("seal every version again with FERRY_SECRETS_KEY's first key (after adding a new one)")
    .option('--json', 'print {resealed, current, failed} as JSON')
    .addHelpText(
      'after',
      `
Master-key rotation: put the new key first (FERRY_SECRETS_KEY=<new>,<old>) on every process, run this, then
drop the old key. Exit 1 when a version could not be opened (its key is no longer listed).

Examples:
  $ FERRY_SECRETS_KEY="$NEW,$OLD" ferry secrets reencrypt
  $ ferry secrets reencrypt --json
${ENVIRONMENT}`,
    )
    .action(async (options: { json?: boolean }) => {
      const { env, keyring } = await readSettings();
      requireKeyring(keyring, 'secrets reencrypt');
      await withStore(env, keyring, async (store) => {
        const result = await store.reencrypt();
        if (options.json === true) printJson(result, io.stdout);
        else {
          io.stdout.write(
            `reencrypt: ${result.resealed} resealed, ${result.current} already under key ` +
              `${keyring.current.id}, ${result.failed.length} failed\n`,
          );
          for (const failure of result.failed)
            io.stdout.write(`  ${failure.key} version ${failure.version}: ${failure.reason}\n`);
        }
        if (result.failed.length > 0) io.exitCode = EXIT_FAILURE;
      });
    });

  secrets
    .command('keygen')
    .description('print a new random master key (32 bytes, base64) for FERRY_SECRETS_KEY; needs no Redis')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry secrets keygen > ferry-secrets.key && chmod 600 ferry-secrets.key
  $ FERRY_SECRETS_KEY="$(ferry secrets keygen),$FERRY_SECRETS_KEY"   # rotation: new key first
`,
    )
    .action(async () => {
      const { generateMasterKey } = await import('../../secrets/crypto.ts');
      io.stdout.write(`${generateMasterKey()}\n`);
    });
}

/** `crm_key` with `--tenant acme` → `tenant/acme/crm_key`; a bad name is a ValidationError (exit 2). */
async function parseKey(name: string, tenant: string | undefined): Promise<string> {
  const { parseSecretKey, secretKey } = await import('../../secrets/names.ts');
  const parsed = parseSecretKey(name, tenant);
  return secretKey(parsed.name, parsed.tenant);
}

/** The worker's environment (REDIS_URL required: exit 2 without it) and its master keys, if any. */
async function readSettings(): Promise<{ env: Env; keyring: Keyring | undefined }> {
  const [{ readEnvWithRedis }, { loadKeyring }] = await Promise.all([
    import('../runtime.ts'),
    import('../../secrets/setup.ts'),
  ]);
  const env = readEnvWithRedis();
  return { env, keyring: await loadKeyring(env) };
}

function requireKeyring(keyring: Keyring | undefined, command: string): asserts keyring is Keyring {
  if (keyring === undefined) {
    throw new UsageError(
      `FERRY_SECRETS_KEY (or FERRY_SECRETS_KEY_FILE) is not set: ferry ${command} needs the master key ` +
        `(ferry secrets keygen makes one)`,
    );
  }
}

/** Runs `work` with a store on a fresh connection, which is closed afterwards so the process exits. */
async function withStore(
  env: Env,
  keyring: Keyring | undefined,
  work: (store: SecretStore, connection: RedisClient) => Promise<void>,
): Promise<void> {
  const [{ connectWhenReady }, { SecretStore }] = await Promise.all([
    import('../runtime.ts'),
    import('../../secrets/redis-store.ts'),
  ]);
  // A one-shot command: a Redis that refuses the connection ends it at once, with one line.
  const connection = await connectWhenReady(env, 'producer', 'ferry-secrets', { waitMs: 0 });
  try {
    await work(new SecretStore({ connection, prefix: env.FERRY_PREFIX, keyring }), connection);
  } finally {
    connection.disconnect();
  }
}

/**
 * The services file. `list` goes on without one when FERRY_SERVICES is not set and the default file is
 * missing (store keys are still worth listing; "used by" is then empty), and says so.
 */
async function loadConfig(io: CliIo, env: Env, required: boolean): Promise<ServicesConfig> {
  const { loadServicesFile } = await import('../../core/services/load.ts');
  if (!required && process.env.FERRY_SERVICES === undefined) {
    try {
      await access(env.FERRY_SERVICES);
    } catch {
      io.stderr.write(`note: no services file at ${env.FERRY_SERVICES}; "used by" is not shown\n`);
      return { services: new Map(), schedules: new Map(), source: undefined };
    }
  }
  return loadServicesFile(env.FERRY_SERVICES);
}

/** The value from --file or stdin (a hidden prompt on a terminal), one trailing newline dropped; never empty. */
async function readValue(io: CliIo, key: string, file: string | undefined): Promise<string> {
  let raw: string;
  if (file !== undefined) {
    try {
      raw = await readFile(file, 'utf8');
    } catch (error) {
      throw new UsageError(
        `--file: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
  } else if (io.stdin.isTTY === true) {
    raw = await promptHidden(io, `value of ${key} (not shown): `);
  } else {
    raw = await text(io.stdin);
  }
  const value = raw.endsWith('\r\n') ? raw.slice(0, -2) : raw.endsWith('\n') ? raw.slice(0, -1) : raw;
  if (value === '') {
    throw new UsageError(`empty value refused for ${key} (pipe it on stdin or give --file)`);
  }
  return value;
}

/** Reads one line from the terminal in raw mode, echoing nothing. Ctrl-C or Ctrl-D on an empty line cancels. */
function promptHidden(io: CliIo, prompt: string): Promise<string> {
  const input = io.stdin;
  io.stderr.write(prompt);
  input.setRawMode?.(true);
  input.setEncoding('utf8');
  input.resume();
  return new Promise((resolve, reject) => {
    let value = '';
    const finish = (): void => {
      input.off('data', onData);
      input.setRawMode?.(false);
      input.pause();
      io.stderr.write('\n');
    };
    const onData = (chunk: string): void => {
      for (const char of chunk) {
        if (char === '\r' || char === '\n' || (char === '\u0004' && value !== '')) {
          finish();
          resolve(value);
          return;
        }
        if (char === '\u0003' || char === '\u0004') {
          finish();
          reject(new UsageError('cancelled'));
          return;
        }
        if (char === '\u007f' || char === '\b') value = value.slice(0, -1);
        else value += char;
      }
    };
    input.on('data', onData);
  });
}

async function confirm(io: CliIo, question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const lines = createInterface({ input: io.stdin, output: io.stderr });
  try {
    return /^y(es)?$/i.test((await lines.question(question)).trim());
  } finally {
    lines.close();
  }
}

function parseVersion(text: string): number {
  const version = Number(text);
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new UsageError(`--version: must be a positive integer, got "${text}"`);
  }
  return version;
}

async function readInput(io: CliIo, value: string): Promise<unknown> {
  let raw: string;
  if (value === '-') raw = await text(io.stdin);
  else if (value.startsWith('@')) {
    try {
      raw = await readFile(value.slice(1), 'utf8');
    } catch (error) {
      throw new UsageError(
        `--input: cannot read ${value.slice(1)} (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
  } else raw = value;
  try {
    return JSON.parse(raw) as unknown;
  } catch (error) {
    throw new UsageError(`--input: not valid JSON (${(error as Error).message})`);
  }
}

async function silentLogger(): Promise<Logger> {
  const { pino } = await import('pino');
  return pino({ level: 'silent' });
}

/** A change's result: one line (or JSON) on success; a refusal is one line on stderr and exit 1. */
function report(
  io: CliIo,
  key: string,
  change: SecretChange,
  options: KeyOptions,
  line: (version: number) => string,
  json: (version: number) => Record<string, unknown>,
): void {
  if (!change.ok) {
    if (options.json === true)
      printJson({ key, ok: false, reason: change.reason, message: change.message }, io.stdout);
    else io.stderr.write(`${key}: ${change.message}\n`);
    io.exitCode = EXIT_FAILURE;
    return;
  }
  if (options.json === true) printJson({ key, ...json(change.version) }, io.stdout);
  else io.stdout.write(`${key}: ${line(change.version)}\n`);
}

/** Longest body excerpt printed by `test` (the whole scrubbed body is in --json). */
const EXCERPT_CHARS = 300;

function printOutcome(
  io: CliIo,
  key: string,
  version: number,
  options: TestOptions,
  outcome: SecretTestOutcome,
): void {
  if (options.json === true) {
    printJson(
      { key, version, service: options.service, operation: options.operation, ...outcome },
      io.stdout,
    );
    return;
  }
  const call = `${key} (staged version ${version}) → ${options.service}/${options.operation}`;
  if (outcome.outcome === 'completed') {
    const body = outcome.body === undefined ? '' : JSON.stringify(outcome.body);
    const excerpt = body.length > EXCERPT_CHARS ? `${body.slice(0, EXCERPT_CHARS)}…` : body;
    io.stdout.write(
      `${call}: completed, status ${outcome.status} in ${outcome.durationMs} ms\n` +
        (excerpt === '' ? '' : `body${outcome.bodyTruncated === true ? ' (truncated)' : ''}: ${excerpt}\n`),
    );
  } else {
    io.stdout.write(
      `${call}: failed after ${outcome.durationMs} ms: ${outcome.error.type}: ${outcome.error.message}\n`,
    );
  }
}

function printTable(io: CliIo, list: readonly SecretDescription[]): void {
  if (list.length === 0) {
    io.stdout.write('no secrets: the store is empty and no service references one\n');
    return;
  }
  const rows = list.map((item) => [
    item.key,
    version(item.current),
    version(item.staged),
    String(item.previous.length),
    item.usedBy.length === 0 ? '-' : item.usedBy.join(','),
    item.definedIn.length === 0 ? 'nowhere (!)' : item.definedIn.join(','),
  ]);
  const header = ['KEY', 'CURRENT', 'STAGED', 'PREVIOUS', 'USED BY', 'DEFINED IN'];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column]!.length)),
  );
  for (const row of [header, ...rows]) {
    io.stdout.write(
      `${row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd()}\n`,
    );
  }
  const missing = list.filter((item) => item.definedIn.length === 0 && item.usedBy.length > 0);
  for (const item of missing) {
    io.stdout.write(
      `(!) ${item.key} is referenced by ${item.usedBy.join(', ')} but defined in no source: ` +
        `their jobs fail with ConfigurationError until it is set\n`,
    );
  }
}

/** `v3 2025-06-01 12:30Z`, or `-`. */
function version(info: VersionInfo | undefined): string {
  if (info === undefined) return '-';
  return `v${info.version} ${new Date(info.createdAt).toISOString().slice(0, 16).replace('T', ' ')}Z`;
}
