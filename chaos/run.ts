/**
 * `npm run chaos`: runs every scenario in chaos/scenarios/ one after another against the built CLI (dist/),
 * prints progress to stderr and one table to stdout, and exits 1 when any row is not ok.
 *
 *   npm run chaos -- [--only name,name] [--smoke] [--seed N] [--markdown] [--list]
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { killAllChildren } from './lab.ts';
import { crashedRow, formatMs } from './rows.ts';
import type { Scenario, ScenarioRow } from './scenario.ts';

const SCENARIOS_DIR = fileURLToPath(new URL('./scenarios/', import.meta.url));

function isScenario(value: unknown): value is Scenario {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Scenario).name === 'string' &&
    typeof (value as Scenario).run === 'function'
  );
}

/** Every scenario of every module in chaos/scenarios/, in file-name order, then in the module's order. */
export async function discoverScenarios(dir = SCENARIOS_DIR): Promise<Scenario[]> {
  const files = (await readdir(dir))
    .filter((file) => /\.(ts|js)$/.test(file) && !file.endsWith('.d.ts') && !file.endsWith('.test.ts'))
    .sort();
  const scenarios: Scenario[] = [];
  const seen = new Set<string>();
  for (const file of files) {
    const module = (await import(pathToFileURL(join(dir, file)).href)) as { default?: unknown };
    const exported = Array.isArray(module.default) ? (module.default as unknown[]) : [module.default];
    for (const candidate of exported) {
      if (!isScenario(candidate))
        throw new Error(`chaos/scenarios/${file}: default export is not a Scenario`);
      if (seen.has(candidate.name))
        throw new Error(`chaos/scenarios/${file}: scenario ${candidate.name} twice`);
      seen.add(candidate.name);
      scenarios.push(candidate);
    }
  }
  return scenarios;
}

const COLUMNS = [
  'scenario',
  'enqueued',
  'completed',
  'dead-lettered',
  'lost',
  'duplicate calls',
  'differing keys',
  '5xx answers',
  'secret hits',
  'time to recover',
  'ok',
  'notes',
] as const;

function cells(row: ScenarioRow): string[] {
  return [
    row.scenario,
    String(row.enqueued),
    String(row.completed),
    String(row.deadLettered),
    String(row.lost),
    String(row.duplicateCalls),
    String(row.duplicatesWithDifferingKeys),
    String(row.serverErrors),
    String(row.secretHits),
    formatMs(row.recoverMs),
    row.ok ? 'ok' : 'NOT OK',
    row.notes ?? '',
  ];
}

/** A plain-text table: columns padded, notes last and unpadded. */
export function textTable(rows: readonly ScenarioRow[]): string {
  const body = rows.map(cells);
  const widths = COLUMNS.map((title, i) => Math.max(title.length, ...body.map((line) => line[i]!.length)));
  const render = (line: readonly string[]): string =>
    line
      .map((cell, i) =>
        i === line.length - 1 ? cell : i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!),
      )
      .join(' | ')
      .trimEnd();
  const rule = widths.map((width, i) => (i === widths.length - 1 ? '-----' : '-'.repeat(width))).join('-|-');
  return [render(COLUMNS), rule, ...body.map(render)].join('\n');
}

/** The same table as Markdown (for docs/reliability.md). */
export function markdownTable(rows: readonly ScenarioRow[]): string {
  const escape = (cell: string): string => cell.replaceAll('|', '\\|');
  const line = (values: readonly string[]): string => `| ${values.map(escape).join(' | ')} |`;
  // Figures right-aligned; name, ok and notes left.
  const align = COLUMNS.map((title) => (['scenario', 'ok', 'notes'].includes(title) ? '---' : '---:'));
  return [line(COLUMNS), `|${align.join('|')}|`, ...rows.map((row) => line(cells(row)))].join('\n');
}

const USAGE = 'usage: npm run chaos -- [--only name,name] [--smoke] [--seed N] [--markdown] [--list]';

async function main(): Promise<number> {
  let options;
  try {
    options = parseArgs({
      options: {
        only: { type: 'string' },
        smoke: { type: 'boolean', default: false },
        seed: { type: 'string' },
        markdown: { type: 'boolean', default: false },
        list: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }).values;
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n${USAGE}\n`);
    return 2;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const all = await discoverScenarios();
  if (options.list) {
    process.stdout.write(`${all.map((scenario) => scenario.name).join('\n')}\n`);
    return 0;
  }
  let selected = all;
  if (options.only !== undefined) {
    const names = options.only
      .split(',')
      .map((name) => name.trim())
      .filter((name) => name !== '');
    const unknown = names.filter((name) => !all.some((scenario) => scenario.name === name));
    if (unknown.length > 0) {
      process.stderr.write(
        `unknown scenario(s): ${unknown.join(', ')}; known: ${all.map((s) => s.name).join(', ')}\n`,
      );
      return 2;
    }
    selected = all.filter((scenario) => names.includes(scenario.name));
  }
  let seed: number;
  if (options.seed === undefined) seed = Math.floor(Math.random() * 2 ** 31);
  else if (/^\d+$/.test(options.seed)) seed = Number(options.seed) % 2 ** 32;
  else {
    process.stderr.write(`--seed must be a non-negative integer\n${USAGE}\n`);
    return 2;
  }

  const started = performance.now();
  process.stderr.write(
    `chaos: ${selected.length} scenario(s)${options.smoke ? ' (smoke)' : ''}, seed ${seed} (repeat with --seed ${seed})\n`,
  );
  const rows: ScenarioRow[] = [];
  for (const [i, scenario] of selected.entries()) {
    const scenarioStarted = performance.now();
    const prefix = `[${i + 1}/${selected.length} ${scenario.name}]`;
    const log = (line: string): void => {
      const seconds = ((performance.now() - scenarioStarted) / 1000).toFixed(1).padStart(5);
      process.stderr.write(`${prefix} ${seconds}s ${line}\n`);
    };
    log('start');
    let row: ScenarioRow;
    try {
      row = await scenario.run({ smoke: options.smoke, seed, log });
    } catch (error) {
      log(`crashed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      row = crashedRow(scenario.name, error);
    }
    rows.push(row);
    log(
      `${row.ok ? 'ok' : 'NOT OK'} in ${((performance.now() - scenarioStarted) / 1000).toFixed(1)} s${row.notes === undefined ? '' : `: ${row.notes}`}`,
    );
  }
  const failed = rows.filter((row) => !row.ok);
  process.stdout.write(`${options.markdown ? markdownTable(rows) : textTable(rows)}\n`);
  process.stderr.write(
    `chaos: ${rows.length - failed.length}/${rows.length} ok in ${((performance.now() - started) / 1000).toFixed(0)} s, seed ${seed}` +
      (failed.length > 0 ? `; not ok: ${failed.map((row) => row.scenario).join(', ')}\n` : '\n'),
  );
  return failed.length > 0 ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`\nchaos: ${signal}, stopping every process it started\n`);
    killAllChildren();
    process.exit(130);
  });
}

main()
  .then((code) => process.exit(code))
  .catch((error: unknown) => {
    process.stderr.write(
      `chaos: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    killAllChildren();
    process.exit(1);
  });
