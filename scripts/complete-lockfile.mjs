#!/usr/bin/env node
/**
 * Adds the platform-specific optional packages that `npm install` left out of package-lock.json.
 *
 * Why: the npm registry mirror this project is developed against serves only some platforms' binaries (e.g.
 * @msgpackr-extract/*-darwin-arm64 answers 404), so npm silently drops those optional dependencies from the
 * lock file, and then `npm ci` refuses the lock on every machine ("Missing: ... from lock file"). An entry with
 * the right `os`/`cpu`/`libc` and no integrity is what npm itself writes for a package it could not inspect:
 * on a machine of that platform npm fetches it, everywhere else it skips it.
 *
 *   node scripts/complete-lockfile.mjs          # after any `npm install` that changed the lock
 */
import { readFileSync, writeFileSync } from 'node:fs';

const LOCK = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(LOCK, 'utf8'));
const packages = lock.packages;

/** Platform from a binary package's name: `…-darwin-arm64`, `…-linux-arm-musleabihf`, `…-win32-ia32-msvc`. */
function platformOf(name) {
  const os = ['android', 'darwin', 'freebsd', 'linux', 'openharmony', 'win32'].find((o) =>
    name.includes(`-${o}-`),
  );
  const rest = os === undefined ? '' : name.slice(name.lastIndexOf(`-${os}-`) + os.length + 2);
  const cpu = ['arm64', 'arm', 'x64', 'ia32', 'loong64', 'ppc64', 'riscv64', 's390x'].find(
    (c) => rest === c || rest.startsWith(`${c}-`),
  );
  const libc = /musl/.test(rest) ? 'musl' : /gnu/.test(rest) ? 'glibc' : undefined;
  return os === undefined || cpu === undefined ? undefined : { os, cpu, libc };
}

let added = 0;
for (const [path, entry] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (packages[key] !== undefined || packages[`${path}/${key}`] !== undefined) continue;
    const platform = platformOf(name);
    if (platform === undefined) {
      console.error(`cannot tell the platform of ${name}; add it by hand`);
      process.exitCode = 1;
      continue;
    }
    packages[key] = {
      version,
      cpu: [platform.cpu],
      ...(entry.dev === true ? { dev: true } : {}),
      ...(platform.libc === undefined ? {} : { libc: [platform.libc] }),
      optional: true,
      os: [platform.os],
    };
    added++;
  }
}

lock.packages = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)),
);
writeFileSync(LOCK, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`added ${added} missing optional package(s) to package-lock.json`);
