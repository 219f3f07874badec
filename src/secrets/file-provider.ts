import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { ConfigurationError } from '../core/errors.ts';
import { parseSecretKey } from './names.ts';
import type { SecretSource } from './resolver.ts';

/**
 * Secrets from a directory of files, as Docker and Kubernetes mount them: `<dir>/<name>` holds the global
 * value, `<dir>/tenant/<tenant>/<name>` a tenant's. One trailing newline is dropped (`echo value > file`).
 * Read-only, and read asynchronously (never blocking the worker); wrap it in a CachedSecretSource, so a
 * rotated file (Kubernetes swaps a symlink) is picked up after the cache time. Keys are checked against the
 * name and tenant patterns, which hold no `/` of their own and no leading dot, so no key leaves the directory.
 */
export function createFileSecretSource(directory: string): SecretSource {
  return {
    kind: 'file',
    async read(key) {
      const { name, tenant } = parseSecretKey(key);
      const path = tenant === undefined ? join(directory, name) : join(directory, 'tenant', tenant, name);
      try {
        return stripNewline(await readFile(path, 'utf8'));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
        throw new ConfigurationError(`secret file for "${key}" could not be read (${code ?? 'error'})`);
      }
    },
  };
}

function stripNewline(text: string): string {
  if (text.endsWith('\r\n')) return text.slice(0, -2);
  return text.endsWith('\n') ? text.slice(0, -1) : text;
}
