/**
 * The Dockerfile's run stage, read without a container engine (issue 14): production dependencies only (the
 * packages npm installs with the stage's own `npm ci` flags, computed from package-lock.json the way npm
 * decides, and compared with `npm ls --omit=dev`), dist/ and the package files only, a non-root user, a
 * HEALTHCHECK that exists in dist/, ENTRYPOINT tini -- ferry. And the HEALTHCHECK script's choice of probe.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { probeFor, roleOf } from '../../src/cli/healthcheck.ts';
import { readEnv } from '../../src/core/env.ts';
import { ROOT } from '../helpers/processes.ts';

const execFileAsync = promisify(execFile);
/** The part of `semver` used here (it ships no types). */
const semver = createRequire(import.meta.url)('semver') as {
  intersects(a: string, b: string): boolean;
};

interface Instruction {
  keyword: string;
  args: string;
}

interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

/** Dockerfile → stages of instructions (continuation lines joined, comments dropped), and global ARG defaults. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const lines: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && pending === '')) continue;
    pending += pending === '' ? line : ` ${line}`;
    if (pending.endsWith('\\')) pending = pending.slice(0, -1).trimEnd();
    else {
      if (pending !== '') lines.push(pending);
      pending = '';
    }
  }
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const [keyword, ...rest] = line.split(/\s+/);
    const instruction = { keyword: keyword!.toUpperCase(), args: rest.join(' ') };
    if (instruction.keyword === 'FROM') {
      const match = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args)!;
      const from = match[1]!.replace(/\$\{(\w+)\}/g, (_, name: string) => args.get(name) ?? '');
      stages.push({ name: match[2] ?? String(stages.length), from, instructions: [] });
    } else if (stages.length === 0 && instruction.keyword === 'ARG') {
      const [name, value] = instruction.args.split('=');
      args.set(name!, value ?? '');
    } else stages.at(-1)?.instructions.push(instruction);
  }
  return { args, stages };
}

interface LockEntry {
  version: string;
  dev?: boolean;
  optional?: boolean;
  devOptional?: boolean;
  peer?: boolean;
}

/** npm's own rule (arborist Node#shouldOmit) for whether `npm ci --omit=…` leaves a lockfile package out. */
function omitted(entry: LockEntry, omit: ReadonlySet<string>): boolean {
  return (
    (entry.peer === true && omit.has('peer')) ||
    (entry.dev === true && omit.has('dev')) ||
    (entry.optional === true && omit.has('optional')) ||
    (entry.devOptional === true && omit.has('optional') && omit.has('dev'))
  );
}

/** `node_modules/a/node_modules/@s/b` → `@s/b`. */
function packageName(path: string): string {
  return path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
}

async function readRunStage(): Promise<{ stages: Stage[]; run: Stage }> {
  const { stages } = parseDockerfile(await readFile(join(ROOT, 'Dockerfile'), 'utf8'));
  return { stages, run: stages.at(-1)! };
}

async function jsFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.js'))
    .map((entry) => join(entry.parentPath, entry.name));
}

describe('Dockerfile', () => {
  it('build and run stages are one Node major package.json supports (node:24 slim)', async () => {
    const { stages } = await readRunStage();
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      engines: { node: string };
    };
    expect(stages.map((stage) => stage.name)).toEqual(['build', 'run']);
    for (const stage of stages) {
      expect(stage.from, stage.name).toMatch(/^node:\d+-[a-z]+-slim$/);
      // A node:<major> tag follows that major's newest release, so the major must be one engines allows.
      const major = /^node:(\d+)/.exec(stage.from)![1]!;
      expect(semver.intersects(`^${major}.0.0`, pkg.engines.node), `${stage.name}: ${stage.from}`).toBe(true);
    }
    expect(stages[0]!.from).toBe(stages[1]!.from);
  });

  it('the run stage gets dist/, package files and production dependencies only, as a non-root user', async () => {
    const { run } = await readRunStage();
    const copies = run.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD');
    expect(copies.map((i) => i.args)).toEqual([
      'package.json package-lock.json ./',
      '--from=build /src/dist ./dist',
    ]);
    const installs = run.instructions.filter(
      (i) => i.keyword === 'RUN' && /\b(npm (ci|install|i)|yarn|pnpm)\b/.test(i.args),
    );
    expect(installs).toHaveLength(1);
    const npmCi = /npm ci ([^&;|]*)/.exec(installs[0]!.args)![1]!.trim().split(/\s+/);
    expect(npmCi).toContain('--omit=dev');
    expect(npmCi).toContain('--ignore-scripts');

    // The user: set, not root, before the entrypoint.
    const users = run.instructions.filter((i) => i.keyword === 'USER').map((i) => i.args);
    expect(users).toHaveLength(1);
    expect(users[0]).not.toMatch(/^(root|0)(:|$)/);
    const order = run.instructions.map((i) => i.keyword);
    expect(order.indexOf('USER')).toBeLessThan(order.indexOf('ENTRYPOINT'));

    // Nothing secret or deployment-specific baked in.
    const text = run.instructions.map((i) => `${i.keyword} ${i.args}`).join('\n');
    expect(text).not.toMatch(/FERRY_SECRETS_KEY|FERRY_API_TOKENS|FERRY_SECRET_|services\.ya?ml|REDIS_URL/);
  });

  it('no devDependency reaches the image: the run stage installs what npm ls --omit=dev lists, less optionals', async () => {
    const { run } = await readRunStage();
    const flags = /npm ci ([^&;|]*)/.exec(run.instructions.find((i) => /npm ci/.test(i.args))!.args)![1]!;
    const omit = new Set([...flags.matchAll(/--omit=(\w+)/g)].map((match) => match[1]!));
    const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, LockEntry>;
    };
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    const image = new Map<string, LockEntry>();
    for (const [path, entry] of Object.entries(lock.packages))
      if (path !== '' && !omitted(entry, omit)) image.set(`${packageName(path)}@${entry.version}`, entry);

    // Not one devDependency (but those production packages need too, like openapi-types), nor anything npm
    // installs only for them.
    const names = new Set([...image.keys()].map((key) => key.slice(0, key.lastIndexOf('@'))));
    const devOnly = Object.keys(pkg.devDependencies).filter((name) => {
      const entry = lock.packages[`node_modules/${name}`]!;
      return entry.dev === true || entry.devOptional === true;
    });
    expect(devOnly).toEqual(expect.arrayContaining(['typescript', 'vitest', 'eslint', 'tsx']));
    for (const dev of devOnly) expect(names, `devDependency ${dev} in the image`).not.toContain(dev);
    for (const [key, entry] of image)
      expect(entry.dev === true || entry.devOptional === true, key).toBe(false);
    // Every production dependency is there.
    for (const dependency of Object.keys(pkg.dependencies)) expect(names).toContain(dependency);

    // npm's own view of the production tree (installed here): the image has all of it but optional packages
    // (another platform's binaries, TypeScript as an optional peer, msgpackr's native speed-up).
    const { stdout } = await execFileAsync('npm', ['ls', '--omit=dev', '--all', '--json'], {
      cwd: ROOT,
      maxBuffer: 64 * 1024 * 1024,
    });
    type Tree = { version?: string; dependencies?: Record<string, Tree> };
    const listed = new Set<string>();
    const walk = (tree: Tree): void => {
      for (const [name, child] of Object.entries(tree.dependencies ?? {})) {
        if (child.version === undefined) continue; // a peer or optional dependency not installed
        listed.add(`${name}@${child.version}`);
        walk(child);
      }
    };
    walk(JSON.parse(stdout) as Tree);
    // (An optional package may be another platform's binary, not installed here.)
    for (const [key, entry] of image)
      if (entry.optional !== true) expect(listed, `${key} (image) in npm ls --omit=dev`).toContain(key);
    const notInImage = [...listed].filter((key) => !image.has(key)).sort();
    for (const key of notInImage) {
      const entry = Object.entries(lock.packages).find(
        ([path, e]) => path !== '' && `${packageName(path)}@${e.version}` === key,
      )![1];
      expect(entry.optional === true || entry.devOptional === true, `${key} left out of the image`).toBe(
        true,
      );
    }
    expect(notInImage.map((key) => key.slice(0, key.lastIndexOf('@')))).toContain('typescript');
  });

  it('everything dist/ imports is a production dependency or a Node built-in', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    const imported = new Set<string>();
    for (const file of await jsFiles(join(ROOT, 'dist'))) {
      const text = await readFile(file, 'utf8');
      for (const match of text.matchAll(/(?:from\s+|import\s*\(\s*)['"]([^'".][^'"]*)['"]/g)) {
        const specifier = match[1]!;
        if (specifier.startsWith('node:')) continue;
        const parts = specifier.split('/');
        imported.add(specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!);
      }
    }
    expect(imported.size).toBeGreaterThan(5);
    for (const name of imported)
      expect(Object.keys(pkg.dependencies), `dist/ imports ${name}`).toContain(name);
  });

  it('ENTRYPOINT is tini -- ferry (the package bin), and HEALTHCHECK runs a script in dist/', async () => {
    const { run } = await readRunStage();
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { bin: { ferry: string } };
    const entrypoint = run.instructions.find((i) => i.keyword === 'ENTRYPOINT')!;
    expect(JSON.parse(entrypoint.args)).toEqual(['tini', '--', 'ferry']);
    const runs = run.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
    expect(runs.some((r) => /apt-get install .*\btini\b/.test(r))).toBe(true);
    const link = runs.map((r) => /ln -s (\S+) \/usr\/local\/bin\/ferry/.exec(r)).find((m) => m !== null);
    expect(link?.[1]).toBe(join('/app', pkg.bin.ferry));
    expect(runs.some((r) => r.includes(`chmod 0755 ${pkg.bin.ferry}`))).toBe(true);
    expect(run.instructions.find((i) => i.keyword === 'WORKDIR')?.args).toBe('/app');

    const healthcheck = run.instructions.find((i) => i.keyword === 'HEALTHCHECK')!;
    const command = JSON.parse(healthcheck.args.slice(healthcheck.args.indexOf('CMD') + 3)) as string[];
    expect(command[0]).toBe('node');
    const script = command[1]!.replace(/^\/app\//, '');
    expect(script).toBe('dist/cli/healthcheck.js');
    await expect(readFile(join(ROOT, script), 'utf8')).resolves.toContain('/healthz');
  });
});

describe('healthcheck (the image HEALTHCHECK)', () => {
  it('finds the role in PID 1 command line', () => {
    expect(roleOf(['tini', '--', 'ferry', 'worker'])).toBe('worker');
    expect(roleOf(['tini', '--', '/usr/local/bin/ferry', '--verbose', 'api'])).toBe('api');
    expect(roleOf(['node', '/app/dist/cli/main.js', 'worker', '--services', 'crm'])).toBe('worker');
    expect(roleOf(['sh'])).toBeUndefined();
  });

  it('probes the API port for api, the metrics port for worker, nothing for the rest', () => {
    const env = readEnv({ HOST: '0.0.0.0', PORT: '8080', FERRY_METRICS_HOST: '0.0.0.0' });
    expect(probeFor('api', env)).toEqual({ kind: 'http', url: 'http://127.0.0.1:8080/healthz' });
    expect(probeFor('worker', env)).toEqual({ kind: 'http', url: 'http://127.0.0.1:9464/healthz' });
    expect(
      probeFor('worker', readEnv({ FERRY_METRICS_HOST: '10.0.0.5', FERRY_METRICS_PORT: '9999' })),
    ).toEqual({
      kind: 'http',
      url: 'http://10.0.0.5:9999/healthz',
    });
    expect(probeFor('worker', readEnv({ FERRY_METRICS_PORT: '0' })).kind).toBe('none');
    expect(probeFor('status', env).kind).toBe('none');
  });

  it('exits 1 with one line when nothing answers', async () => {
    const script = join(ROOT, 'dist', 'cli', 'healthcheck.js');
    const failed = await execFileAsync(process.execPath, [script, 'api'], {
      env: { PATH: process.env.PATH, PORT: '1' },
    }).then(
      () => undefined,
      (error: { code: number; stdout: string }) => error,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stdout).toMatch(/^unhealthy: http:\/\/127\.0\.0\.1:1\/healthz did not answer \(\w+\)\n$/);
  });
});
