/**
 * docs/architecture.md stays true: its module list names every folder of src/, and its dependency table says,
 * per folder, what the lint zone allows (eslint.config.js, the rule) and what the code imports today. Adding a
 * folder, a zone or an allowed import, or a first import of another folder, fails here until the doc says so.
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SRC = join(ROOT, 'src');

/** What a row's cell says: a list of folders, or `anything` (a folder without a zone). */
type Imports = readonly string[] | 'anything';

interface ArchitectureDoc {
  /** The folders of the module list (the code block that starts with `src/`). */
  modules: string[];
  /** The dependency table: module → [may import, imports today]. */
  table: Map<string, { allowed: Imports; used: Imports }>;
}

function parseCell(cell: string): Imports {
  const text = cell.trim();
  if (/^anything\b/.test(text)) return 'anything';
  if (/^nothing\b/.test(text)) return [];
  const names = [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  if (names.length === 0) throw new Error(`architecture.md: cannot read the table cell "${text}"`);
  return names.sort();
}

function parseArchitectureDoc(text: string): ArchitectureDoc {
  const block = /^```\nsrc\/\n([\s\S]*?)^```$/m.exec(text);
  if (!block) throw new Error('architecture.md: no module list (a code block starting with `src/`)');
  const modules = [...block[1]!.matchAll(/^ {2}([\w.-]+)\/\s/gm)].map((m) => m[1]!);

  const section = /^### Dependency rule\n([\s\S]*?)(?=^#)/m.exec(text);
  if (!section) throw new Error('architecture.md: no "### Dependency rule" section');
  const table = new Map<string, { allowed: Imports; used: Imports }>();
  for (const row of section[1]!.matchAll(/^\|\s*`([\w.-]+)`\s*\|([^|\n]*)\|([^|\n]*)\|\s*$/gm)) {
    table.set(row[1]!, { allowed: parseCell(row[2]!), used: parseCell(row[3]!) });
  }
  return { modules, table };
}

interface Zone {
  target: string | string[];
  from: string | string[];
  except?: string[];
}

const list = (value: string | string[]): string[] => (Array.isArray(value) ? value : [value]);

/**
 * The allow-list of every zone on a folder of src/, from the `import-x/no-restricted-paths` rule of
 * eslint.config.js. A zone of another shape fails loudly rather than being skipped: teach this function first.
 */
async function lintZones(folders: readonly string[]): Promise<Map<string, string[]>> {
  const configUrl = new URL('../../eslint.config.js', import.meta.url).href;
  const { default: config } = (await import(configUrl)) as {
    default: { rules?: Record<string, unknown> }[];
  };
  const zones = config.flatMap((entry) => {
    const rule = entry.rules?.['import-x/no-restricted-paths'] as [string, { zones: Zone[] }] | undefined;
    return rule ? rule[1].zones : [];
  });
  expect(zones.length).toBeGreaterThan(0);
  const allowed = new Map<string, string[]>();
  for (const zone of zones) {
    const targets = list(zone.target);
    const from = list(zone.from);
    // The zone that keeps test/, bench/ and chaos/ out of src/: not a rule between folders of src/.
    if (targets.every((t) => t === './src') && from.every((f) => !/^\.\/src(\/|$)/.test(f))) continue;
    // A rule inside a layer (file targets, a file source: e.g. only worker-pool.ts may import the sweep): it
    // narrows which files of a folder import one module, not which folders a folder may import.
    const isFile = (path: string): boolean => /^\.\/src\/[\w.-]+\/.*\.ts$/.test(path);
    if (targets.every(isFile) && from.every(isFile)) continue;
    for (const target of targets) {
      const folder = /^\.\/src\/([\w.-]+)\/?$/.exec(target)?.[1];
      if (!folder) throw new Error(`eslint.config.js: zone target ${target} is not a folder of src/`);
      let names: string[];
      if (from.length === 1 && from[0] === './src') {
        // An allow-list: everything in src/ except these.
        names = (zone.except ?? []).map((e) => e.replace(/^\.\//, '').replace(/\/$/, ''));
      } else if (from.every((f) => /^\.\/src\/[\w.-]+\/?$/.test(f))) {
        // A deny-list: every other folder is allowed.
        const denied = new Set(from.map((f) => f.replace(/^\.\/src\//, '').replace(/\/$/, '')));
        names = folders.filter((name) => !denied.has(name));
      } else {
        throw new Error(`eslint.config.js: cannot read the zone on ${target} (from ${from.join(', ')})`);
      }
      const previous = allowed.get(folder);
      const own = names.filter((name) => name !== folder);
      // Two zones on one folder: an import must pass both.
      allowed.set(folder, previous ? previous.filter((name) => own.includes(name)) : own);
    }
  }
  for (const [folder, names] of allowed) allowed.set(folder, [...new Set(names)].sort());
  return allowed;
}

async function tsFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile() && /\.[cm]?ts$/.test(entry.name))
    .map((entry) => join(entry.parentPath, entry.name));
}

/** The other folders of src/ (or `index.ts`) that a folder's files import: static, type-only and dynamic. */
async function importedFolders(folder: string): Promise<string[]> {
  const used = new Set<string>();
  for (const file of await tsFiles(join(SRC, folder))) {
    const { importedFiles } = ts.preProcessFile(await readFile(file, 'utf8'), true, true);
    for (const { fileName } of importedFiles) {
      if (!fileName.startsWith('.')) continue;
      const path = relative(SRC, resolve(dirname(file), fileName));
      if (path.startsWith('..')) throw new Error(`${file} imports ${fileName}, outside src/`);
      const top = path.split(sep)[0]!;
      if (top !== folder) used.add(top);
    }
  }
  return [...used].sort();
}

async function srcFolders(): Promise<string[]> {
  const entries = await readdir(SRC, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
}

async function readDoc(): Promise<ArchitectureDoc> {
  return parseArchitectureDoc(await readFile(join(ROOT, 'docs/architecture.md'), 'utf8'));
}

describe('docs/architecture.md', () => {
  it('lists every folder of src/ in its module list and its dependency table, and no other', async () => {
    const folders = await srcFolders();
    const doc = await readDoc();
    expect(folders.length).toBeGreaterThan(5);
    expect([...doc.modules].sort(), 'module list').toEqual(folders);
    expect([...doc.table.keys()].sort(), 'dependency table').toEqual(folders);
  });

  it("says what each folder's lint zone allows, and 'anything' for a folder without a zone", async () => {
    const folders = await srcFolders();
    const zones = await lintZones(folders);
    const doc = await readDoc();
    for (const name of zones.keys()) expect(folders, `zone on src/${name}`).toContain(name);
    for (const [name, { allowed }] of doc.table) {
      expect(allowed, `"May import" of ${name}`).toEqual(zones.get(name) ?? 'anything');
    }
  });

  it('says what each folder imports today, within what it may import', async () => {
    const doc = await readDoc();
    expect(doc.table.size).toBeGreaterThan(5);
    for (const [name, { allowed, used }] of doc.table) {
      const actual = await importedFolders(name);
      expect(used, `"Imports today" of ${name}`).toEqual(actual);
      if (allowed !== 'anything') expect(allowed).toEqual(expect.arrayContaining(actual));
    }
  });
});
