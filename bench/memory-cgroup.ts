/**
 * A memory-limited cgroup for one bench child process, as a container's limit would be: Node reads the limit
 * (`process.constrainedMemory()`) and V8 sizes its heap by it, so a worker's RSS under a limit is not its RSS on
 * a host with gigabytes free. Needs a writable cgroup hierarchy (root, cgroup v2 or v1's `memory` controller);
 * without one, createMemoryCgroup throws and says so.
 */
import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const V2_ROOT = '/sys/fs/cgroup';
const V1_ROOT = '/sys/fs/cgroup/memory';

export interface MemoryCgroup {
  readonly path: string;
  readonly limitBytes: number;
  /**
   * The command that runs `argv` inside the cgroup: a shell that moves itself in, then execs it (the process
   * is in the cgroup before Node starts, so Node sees the limit from its first line).
   */
  wrap(argv: readonly string[]): { command: string; args: string[] };
  /** Times the kernel's OOM killer ran in the cgroup. */
  oomKills(): Promise<number>;
  /** Removes the cgroup (its processes must have exited). */
  remove(): Promise<void>;
}

export async function createMemoryCgroup(name: string, limitBytes: number): Promise<MemoryCgroup> {
  const v2 = await exists(join(V2_ROOT, 'cgroup.controllers'));
  const path = join(v2 ? V2_ROOT : V1_ROOT, name);
  try {
    await mkdir(path);
    await writeFile(join(path, v2 ? 'memory.max' : 'memory.limit_in_bytes'), String(limitBytes));
  } catch (error) {
    throw new Error(
      `--memory-limit needs a writable cgroup ${v2 ? 'v2' : 'v1 memory'} hierarchy (run as root): ${(error as Error).message}`,
    );
  }
  return {
    path,
    limitBytes,
    wrap: (argv) => ({
      command: 'sh',
      args: ['-c', `echo $$ > '${join(path, 'cgroup.procs')}' && exec "$0" "$@"`, ...argv],
    }),
    oomKills: async () => {
      const text = await readFile(join(path, v2 ? 'memory.events' : 'memory.oom_control'), 'utf8');
      return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0);
    },
    remove: () => rmdir(path),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
