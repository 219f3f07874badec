/**
 * The README is a front door into docs/: every relative link and #anchor of the project's markdown must lead
 * somewhere, and the README keeps the two commands CI and newcomers rely on.
 */
import { existsSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

async function markdownFiles(): Promise<string[]> {
  const files = ['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md'];
  for (const dir of ['docs', 'bench', 'examples']) {
    for (const name of await readdir(join(ROOT, dir))) if (name.endsWith('.md')) files.push(`${dir}/${name}`);
  }
  return files.map((file) => join(ROOT, file));
}

const withoutCode = (text: string): string => text.replace(/^```[\s\S]*?^```/gm, '');

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes, repeats numbered. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const match of withoutCode(text).matchAll(/^#{1,6}\s+(.+)$/gm)) {
    const slug = match[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    result.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return result;
}

describe('markdown links', () => {
  it('every relative link and anchor in README, docs/, bench/ and examples/ resolves', async () => {
    const files = await markdownFiles();
    const texts = new Map<string, string>();
    const read = async (file: string): Promise<string> => {
      const cached = texts.get(file);
      if (cached !== undefined) return cached;
      const text = await readFile(file, 'utf8');
      texts.set(file, text);
      return text;
    };
    const broken: string[] = [];
    let checked = 0;
    for (const file of files) {
      for (const [, link] of withoutCode(await read(file)).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z][a-z+.-]*:/i.test(link!)) continue; // https:, mailto:
        const [path, anchor] = link!.split('#');
        const target = path ? resolve(dirname(file), path) : file;
        checked++;
        if (!existsSync(target)) broken.push(`${relative(ROOT, file)}: ${link} (no such file)`);
        else if (anchor && statSync(target).isFile() && !anchors(await read(target)).has(anchor))
          broken.push(`${relative(ROOT, file)}: ${link} (no such heading)`);
      }
    }
    expect(checked).toBeGreaterThan(50);
    expect(broken).toEqual([]);
  });

  it("finds a heading's anchor the way GitHub spells it", () => {
    expect([...anchors('## Sealed inputs (`sensitive: true`)\n## Errors\n## Errors\n')]).toEqual([
      'sealed-inputs-sensitive-true',
      'errors',
      'errors-1',
    ]);
  });
});

describe('README.md', () => {
  it('stays a front door of about 12 KB with the two commands, the test command being what CI runs', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const ci = await readFile(join(ROOT, '.ci/run'), 'utf8');
    expect(Buffer.byteLength(readme)).toBeLessThanOrEqual(12 * 1024);
    expect(readme).toMatch(/^npm ci && npm start\b/m);
    expect(readme).toMatch(/^npm test\b/m);
    // Once per supported Node: `step "test (node ${version})" with_node "$version" npm test …`.
    expect(ci).toMatch(/^\s*step "test \(node \$\{version\}\)" with_node "\$version" npm test\b/m);
  });
});
