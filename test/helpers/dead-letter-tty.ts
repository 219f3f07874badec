/**
 * `ferry dlq` on a real terminal: dead letters of `crm` on a fresh prefix, a services file naming `crm`, and a
 * private tmux server (its own `-L` socket) killed when the test finishes. .ci/run installs tmux.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { onTestFinished } from 'vitest';

import { type DeadLetterKit, deadLetterKit } from '../dead-letter/support.ts';
import { writeServicesFile } from './processes.ts';
import type { TestRedis } from './redis.ts';

const run = promisify(execFile);

export interface DeadLettersOnTty {
  kit: DeadLetterKit;
  servicesFile: string;
  /** Runs `tmux -L <private socket> ...args`. */
  tmux(...args: string[]): Promise<{ stdout: string }>;
}

/** `count` dead letters a minute old, the services file, and the tmux runner. */
export async function deadLettersOnTty(redis: TestRedis, count: number): Promise<DeadLettersOnTty> {
  const servicesFile = await writeServicesFile({
    services: {
      crm: { baseUrl: 'http://127.0.0.1:9', operations: { createContact: { method: 'POST', path: '/c' } } },
    },
  });
  const kit = deadLetterKit(redis);
  for (let i = 0; i < count; i++) await kit.write({ deadLetteredAt: Date.now() - 60_000 });
  const socket = `ferry-test-${kit.prefix}`;
  const tmux = (...args: string[]): Promise<{ stdout: string }> => run('tmux', ['-L', socket, ...args]);
  onTestFinished(async () => {
    await tmux('kill-server').catch(() => undefined);
  });
  return { kit, servicesFile, tmux };
}
