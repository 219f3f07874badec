/**
 * What changes from one Node.js release to the next under Ferry (issue 21), checked on whichever Node runs the
 * suite (`.ci/run` runs it on every supported version; the describe name says which one ran): AES-256-GCM from
 * the bundled OpenSSL must open what another version sealed, since a rolling upgrade has workers of two
 * versions sharing one Redis; and `AbortSignal.any`, which undici's fetch and the tests' fetch calls rely on.
 * The rest is covered where it is used: undici headers and bodies (test/worker/call, header-values), the CLI's
 * --help and exit codes (test/cli/commands), ESM loading of ferry/producer from a packed install
 * (test/package/packed-install, producer-imports).
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { openJobContent } from '../../src/core/sealed-data.ts';
import { open, parseKeyring } from '../../src/secrets/crypto.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { ROOT } from '../helpers/processes.ts';
import { waitUntil } from '../helpers/until.ts';

const undiciDependency = (
  JSON.parse(readFileSync(join(ROOT, 'node_modules', 'undici', 'package.json'), 'utf8')) as {
    version: string;
  }
).version;
const runtime =
  `node ${process.versions.node} (V8 ${process.versions.v8}, OpenSSL ${process.versions.openssl}, ` +
  `bundled undici ${process.versions.undici ?? '?'}; undici dependency ${undiciDependency})`;

/** Sealed once on Node 22.23.5 with this fixed key, by sealJobContent and seal; a test key, nothing else. */
const KEYRING = parseKeyring(`fixed:${'11'.repeat(32)}`);
const SEALED_JOB =
  'fs1.fixed.am9iLTc.SHxTjWdUpJ0stNe5.W_IW5xj7JEdnHrKON7sgqA.RqwQeazdP-eBNHAGt_kSE8CIlJzl9fCAWCSz8c7gYtRyDwQgtv' +
  'WPE6dvBvqfm8zkK0wahRBKRKLjeRRodyyn0v2l';
const SEALED_SECRET = {
  v: 1,
  kid: 'fixed',
  iv: 'GXA9vXzAjdB6hPfz',
  tag: 'urnwrgXmhjR5DlMbcXtGAA==',
  ct: 'udKtWpDggSxCXVLl',
} as const;

describe(runtime, () => {
  it('opens job data and a secret sealed on Node 22 (AES-256-GCM, fixed vectors)', () => {
    expect(openJobContent(KEYRING, { service: 'crm', tenant: 'acme' }, SEALED_JOB, 4096)).toEqual({
      input: { email: 'ada@example.com' },
      metadata: { orderId: 'o-7' },
    });
    expect(open(KEYRING, 'crm-token', 3, SEALED_SECRET)).toBe('s3cr3t-value');
    // The binding still holds: the same envelope for another tenant, or the secret as another version, fails.
    expect(() => openJobContent(KEYRING, { service: 'crm', tenant: 'globex' }, SEALED_JOB, 4096)).toThrow();
    expect(() => open(KEYRING, 'crm-token', 4, SEALED_SECRET)).toThrow();
  });

  it('AbortSignal.any aborts a global fetch when any of its signals does, and closes the connection', async () => {
    const server = createServer(() => {
      // Never answers: only the abort ends the request.
    });
    const { url } = await listenOnFreePort(server);
    const received = once(server, 'request') as Promise<[IncomingMessage]>;
    const caller = new AbortController();
    const signal = AbortSignal.any([caller.signal, AbortSignal.timeout(60_000)]);
    const response = fetch(`${url}/hang`, { signal });
    const [request] = await received;
    let closed = false;
    request.socket.once('close', () => (closed = true));
    const reason = new Error('caller gave up');
    caller.abort(reason);
    await expect(response).rejects.toBe(reason);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(reason);
    await waitUntil(() => closed, 10_000, 'the aborted request to close its connection');
  });
});
