/**
 * `ferry dev` owns its folder's `.ferry`: one at a time (two private redis-servers appending to one AOF merged
 * their jobs), and `.ferry/dev.env` tells other shells where the running one is.
 *
 * The lock is `.ferry/dev.lock`, a JSON record `{ pid, apiUrl?, redisPort?, redisDir? }` that appears whole:
 * written to a file of this process's own, then hard-linked into place, which fails if the lock exists (two
 * starting at once: one wins). A lock whose pid is gone (a SIGKILLed dev) is stale and taken over; taking over
 * is serialised by a directory create, so two starting over one stale lock cannot both remove it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { link, mkdir, readFile, rename, rm, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface DevLockRecord {
  pid: number;
  /** The API's URL, once it listens. */
  apiUrl?: string;
  /** The private redis-server's port and data directory, once it runs: a killed dev leaves it running. */
  redisPort?: number;
  redisDir?: string;
}

/** Another `ferry dev` runs in this folder; the message says which and how to use it. */
export class DevAlreadyRunningError extends Error {
  override readonly name = 'DevAlreadyRunningError';
}

export interface DevLock {
  /** The record of a dev this one took the lock over from (it was killed): its redis-server may still run. */
  readonly stale: DevLockRecord | undefined;
  /** Adds to the record (atomically replaced: a reader never sees half of it). */
  update(fields: Omit<DevLockRecord, 'pid'>): Promise<void>;
  /** Writes `.ferry/dev.env` (owner-only: it holds the token): `KEY='value'` lines a POSIX shell can source. */
  writeEnvFile(entries: readonly (readonly [string, string])[], comments: readonly string[]): Promise<void>;
  /** Removes dev.env and the lock, if the lock is still this process's. Synchronous: also run on `exit`. */
  release(): void;
}

export const LOCK_FILE = 'dev.lock';
export const ENV_FILE = 'dev.env';
const TAKEOVER_DIR = 'dev.lock.takeover';
/** A takeover directory older than this was left by a process killed while taking over (a moment's window). */
const TAKEOVER_STALE_MS = 5_000;

/** Locks `dir` (the project's `.ferry`, created if missing), or throws DevAlreadyRunningError. */
export async function lockDevFolder(dir: string): Promise<DevLock> {
  await mkdir(dir, { recursive: true });
  const lockPath = join(dir, LOCK_FILE);
  let record: DevLockRecord = { pid: process.pid };
  let stale: DevLockRecord | undefined;
  for (let attempt = 0; ; attempt++) {
    if (await createExclusive(dir, lockPath, record)) break;
    const holder = await readRecord(lockPath);
    if (holder === 'missing') continue;
    if (holder !== 'unreadable' && isAlive(holder.pid)) {
      const where = holder.apiUrl === undefined ? 'still starting' : `API ${holder.apiUrl}`;
      throw new DevAlreadyRunningError(
        `ferry dev is already running in this folder (pid ${holder.pid}, ${where}): stop it, or use it from ` +
          `another shell with \`set -a; . .ferry/${ENV_FILE}; set +a\` (not a ferry dev? delete ${lockPath})`,
      );
    }
    if (attempt >= 50) throw new Error(`could not take over the stale lock ${lockPath}; delete it`);
    if (await takeOver(dir, lockPath, holder)) stale = holder === 'unreadable' ? undefined : holder;
    else await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const envPath = join(dir, ENV_FILE);
  let released = false;
  return {
    stale,
    async update(fields) {
      record = { ...record, ...fields };
      const tmp = await writeOwn(dir, JSON.stringify(record));
      await rename(tmp, lockPath);
    },
    async writeEnvFile(entries, comments) {
      const text =
        comments.map((line) => `# ${line}\n`).join('') +
        entries.map(([key, value]) => `${key}=${shellQuote(value)}\n`).join('');
      const tmp = await writeOwn(dir, text);
      await rename(tmp, envPath);
    },
    release() {
      if (released) return;
      released = true;
      let holder: unknown;
      try {
        holder = JSON.parse(readFileSync(lockPath, 'utf8'));
      } catch {
        return;
      }
      // Never remove another dev's lock (this one's was taken over: it was thought dead).
      if ((holder as DevLockRecord).pid !== process.pid) return;
      for (const path of [envPath, lockPath]) {
        try {
          unlinkSync(path);
        } catch {
          // Already gone.
        }
      }
    },
  };
}

/** Creates the lock with its whole record, unless one exists. */
async function createExclusive(dir: string, lockPath: string, record: DevLockRecord): Promise<boolean> {
  const tmp = await writeOwn(dir, JSON.stringify(record));
  try {
    await link(tmp, lockPath);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Removes a stale lock, if this process is the one taking it over; false: another is, try again. */
async function takeOver(dir: string, lockPath: string, seen: DevLockRecord | 'unreadable'): Promise<boolean> {
  const guard = join(dir, TAKEOVER_DIR);
  try {
    await mkdir(guard);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const age = await stat(guard).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    if (age > TAKEOVER_STALE_MS) await rm(guard, { recursive: true, force: true });
    return false;
  }
  try {
    // Still the lock that was judged stale? Another may have taken it over and locked since.
    const now = await readRecord(lockPath);
    const same =
      now === 'unreadable' || seen === 'unreadable'
        ? now === seen
        : now !== 'missing' && now.pid === seen.pid && !isAlive(now.pid);
    if (same) await unlink(lockPath).catch(() => undefined);
    return same;
  } finally {
    await rmdir(guard).catch(() => undefined);
  }
}

async function readRecord(path: string): Promise<DevLockRecord | 'missing' | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw error;
  }
  try {
    const record = JSON.parse(text) as Partial<DevLockRecord>;
    return Number.isSafeInteger(record.pid) && record.pid! > 0 ? (record as DevLockRecord) : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

/** A new owner-only file of this process's, with `text`; its path. */
async function writeOwn(dir: string, text: string): Promise<string> {
  const path = join(dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await writeFile(path, text, { flag: 'wx', mode: 0o600 });
  return path;
}

function isAlive(pid: number): boolean {
  // This process has not locked yet: a lock with its pid is an earlier process's (a container's pid 1 again).
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, and belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** `value` in single quotes for a POSIX shell (`'` written as `'\''`). */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

/**
 * The variables of a running dev's `.ferry/dev.env` in `dir` (the `KEY='value'` lines writeEnvFile writes),
 * or undefined when there is none (no dev runs there: it removes the file when it stops).
 */
export async function readDevEnvFile(dir: string): Promise<Map<string, string> | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, ENV_FILE), 'utf8');
  } catch {
    return undefined;
  }
  const entries = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^([A-Z_][A-Z0-9_]*)='(.*)'$/.exec(line);
    if (match !== null) entries.set(match[1]!, match[2]!.replaceAll("'\\''", "'"));
  }
  return entries;
}
