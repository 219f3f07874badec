/**
 * The container image's HEALTHCHECK (Dockerfile): `node dist/cli/healthcheck.js [api|worker]`. One image runs
 * every role, so the probe follows the command the container runs (the role argument, else PID 1's command
 * line, `tini -- ferry worker`): the API's `/healthz` on HOST:PORT for `api`, the worker's metrics server's
 * `/healthz` on FERRY_METRICS_HOST:FERRY_METRICS_PORT for `worker`. Both answer while the process is up, Redis
 * or not: a container is not restarted for an outage it cannot fix. Exit 0 healthy, 1 not, with one line.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';

import { type Env, readEnv } from '../core/env.ts';

/** A probe that takes longer than this counts as a failure (Docker's own timeout is longer: docs/production.md). */
export const HEALTHCHECK_TIMEOUT_MS = 3_000;

export type HealthProbe =
  { readonly kind: 'http'; readonly url: string } | { readonly kind: 'none'; readonly why: string };

/** The Ferry command in a command line (`tini -- ferry --verbose worker` → `worker`), if there is one. */
export function roleOf(argv: readonly string[]): string | undefined {
  const at = argv.findIndex((arg) => ['ferry', 'main.js'].includes(basename(arg)));
  if (at === -1) return undefined;
  return argv.slice(at + 1).find((arg) => !arg.startsWith('-'));
}

/** A wildcard listen address is probed on loopback; a specific one on itself. */
function probeHost(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

export function probeFor(role: string | undefined, env: Env): HealthProbe {
  if (role === 'api') return { kind: 'http', url: `http://${probeHost(env.HOST)}:${env.PORT}/healthz` };
  if (role === 'worker') {
    if (env.FERRY_METRICS_PORT === 0)
      return { kind: 'none', why: 'FERRY_METRICS_PORT=0: this worker serves no /healthz' };
    return {
      kind: 'http',
      url: `http://${probeHost(env.FERRY_METRICS_HOST)}:${env.FERRY_METRICS_PORT}/healthz`,
    };
  }
  return {
    kind: 'none',
    why: `no health endpoint for ${role === undefined ? 'this command' : `ferry ${role}`}`,
  };
}

async function pid1Argv(): Promise<string[]> {
  try {
    return (await readFile('/proc/1/cmdline', 'utf8')).split('\0').filter((arg) => arg !== '');
  } catch {
    return [];
  }
}

async function main(): Promise<number> {
  const role = process.argv[2] ?? roleOf(await pid1Argv());
  const probe = probeFor(role, readEnv());
  if (probe.kind === 'none') {
    // Healthy by definition: a container whose check can never pass would only be marked unhealthy forever.
    process.stdout.write(`healthy (${probe.why})\n`);
    return 0;
  }
  try {
    const response = await fetch(probe.url, { signal: AbortSignal.timeout(HEALTHCHECK_TIMEOUT_MS) });
    await response.body?.cancel();
    process.stdout.write(
      `${response.ok ? 'healthy' : 'unhealthy'}: ${probe.url} answered ${response.status}\n`,
    );
    return response.ok ? 0 : 1;
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).name;
    process.stdout.write(`unhealthy: ${probe.url} did not answer (${cause})\n`);
    return 1;
  }
}

// Run as a script (the image's HEALTHCHECK), not when a test imports roleOf/probeFor.
if (process.argv[1] !== undefined && basename(process.argv[1]) === 'healthcheck.js') {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stdout.write(`unhealthy: ${(error as Error).message}\n`);
      process.exit(1);
    },
  );
}
