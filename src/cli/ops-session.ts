/**
 * What the ops commands (status, dlq, breakers, queues, retry-plan) share: the environment and services file
 * of the worker (REDIS_URL, FERRY_PREFIX, FERRY_SERVICES), one Redis connection that fails fast, closed when
 * the command is done so the process exits at once; and the parsing of durations and times users type.
 */
import type { OpsDeps } from '../ops/deps.ts';
import { UsageError } from './output.ts';

/**
 * Runs `fn` with ops collaborators; the connection is closed afterwards, whatever happens. `keyring`: also load
 * FERRY_SECRETS_KEY (or FERRY_SECRETS_KEY_FILE) for `fn` to seal with (a malformed one fails the command).
 */
export async function withOps<T>(
  fn: (deps: OpsDeps) => Promise<T>,
  { keyring: wantsKeyring = false }: { keyring?: boolean } = {},
): Promise<T> {
  const [{ loadServicesFile }, { connectWhenReady, readEnvWithRedis }] = await Promise.all([
    import('../core/services/load.ts'),
    import('./runtime.ts'),
  ]);
  const env = readEnvWithRedis();
  const config = await loadServicesFile(env.FERRY_SERVICES);
  const keyring = wantsKeyring ? await (await import('../secrets/setup.ts')).loadKeyring(env) : undefined;
  // The producer role: commands fail fast (no offline queue) instead of hanging while Redis is down, and a
  // Redis that refuses the connection ends the command at once, with one line.
  const connection = await connectWhenReady(env, 'producer', 'ferry-cli', { waitMs: 0 });
  try {
    return await fn({ connection, prefix: env.FERRY_PREFIX, config, keyring });
  } finally {
    connection.disconnect();
  }
}

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** `500ms`, `30s`, `15m`, `2h`, `7d`, `1w`, `1h30m` → ms; anything else is a UsageError naming `option`. */
export function parseDuration(value: string, option: string): number {
  const text = value.trim();
  const pattern = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let end = 0;
  for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
    total += Number(match[1]) * UNITS[match[2]!]!;
    end = pattern.lastIndex;
  }
  if (text === '' || end !== text.length || !(total > 0)) {
    throw new UsageError(`${option}: "${value}" is not a duration (examples: 90s, 15m, 2h, 7d, 1h30m)`);
  }
  return Math.round(total);
}

/** An ISO date/time (`2026-05-01`, `2026-05-01T10:00:00Z`) or a duration ago (`2h`, `7d`) → epoch ms. */
export function parseTime(value: string, option: string, now = Date.now()): number {
  if (/^\d+(?:\.\d+)?(ms|s|m|h|d|w)/.test(value.trim())) return now - parseDuration(value, option);
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) {
    throw new UsageError(
      `${option}: "${value}" is neither an ISO date (2026-05-01T10:00:00Z) nor a time ago (2h, 7d)`,
    );
  }
  return ms;
}

/** A positive integer option (`--limit 20`); anything else is a UsageError naming it. */
export function parseCount(value: string, option: string, { min = 1 } = {}): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min)
    throw new UsageError(`${option}: must be an integer >= ${min} (got "${value}")`);
  return n;
}

/** A table with left-aligned columns, two spaces apart; `rows` include the header. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Epoch ms as an ISO time without milliseconds (`2026-05-01T10:00:00Z`). */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
