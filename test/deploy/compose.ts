/**
 * docker-compose.yml as docker-compose 1.29 reads it on a clean clone, for tests that run its services as local
 * processes: YAML (anchors and `<<` merges, as js-yaml reads them), `${VAR:-default}` interpolation from
 * defaults only (no .env), `env_file` + `environment:` merged as compose merges them.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';

import yaml from 'js-yaml';
import { expect } from 'vitest';

import { ENV_VARIABLES } from '../../src/core/env.ts';
import { ROOT, runFerry } from '../helpers/processes.ts';

export const COMPOSE_FILE = join(ROOT, 'docker-compose.yml');

export interface ComposeService {
  image?: string;
  /** Always a list here: a string command is split as compose splits it (shell words). */
  command?: string[];
  entrypoint?: string[];
  env_file?: string | string[];
  environment?: Record<string, string | number | boolean | null>;
  volumes?: string[];
  secrets?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  stop_grace_period?: string;
  deploy?: { replicas?: number };
  profiles?: string[];
  healthcheck?: { test: string[] };
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
  secrets?: Record<string, { file: string }>;
  volumes?: Record<string, unknown>;
}

/** Every string in a parsed YAML document (keys are not interpolated by compose, nor are comments). */
function strings(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.flatMap(strings);
  if (value !== null && typeof value === 'object') return Object.values(value).flatMap(strings);
  return [];
}

/** Every `${NAME}`, `${NAME:-default}` or `${NAME-default}` the values interpolate (`$$` is a literal `$`). */
export function interpolatedNames(document: unknown): Map<string, string | undefined> {
  const names = new Map<string, string | undefined>();
  for (const text of strings(document))
    for (const match of text.replaceAll('$$', '').matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g))
      names.set(match[1]!, match[2]);
  return names;
}

/** Compose's interpolation with no variable set: every `${NAME:-default}` is its default; `$$` is `$`. */
function interpolateDefaults(text: string): string {
  return text.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (whole, name, fallback) => {
    if (whole === '$$') return '$';
    if (fallback === undefined) throw new Error(`docker-compose.yml: \${${name}} has no default`);
    return fallback as string;
  });
}

function interpolate(value: unknown): unknown {
  if (typeof value === 'string') return interpolateDefaults(value);
  if (Array.isArray(value)) return value.map(interpolate);
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, interpolate(inner)]));
  return value;
}

/** A string command as compose 1.29 splits it (Python's shlex.split): words, '…' and "…" quoting. */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (const char of text) {
    if (quote !== undefined) {
      if (char === quote) quote = undefined;
      else word += char;
    } else if (char === "'" || char === '"') {
      quote = char;
      word ??= '';
    } else if (/\s/.test(char)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else word = (word ?? '') + char;
  }
  if (quote !== undefined) throw new Error(`unbalanced quote in command: ${text}`);
  if (word !== undefined) words.push(word);
  return words;
}

/** The file as written (`raw`) and as compose sees it on a clean clone (`compose`: defaults interpolated). */
export async function readComposeFile(): Promise<{ raw: unknown; compose: ComposeFile }> {
  const raw = yaml.load(await readFile(COMPOSE_FILE, 'utf8'));
  const compose = interpolate(raw) as ComposeFile;
  for (const service of Object.values(compose.services)) {
    const command = service.command as string | string[] | undefined;
    if (typeof command === 'string') service.command = shellWords(command);
  }
  return { raw, compose };
}

/** A path of the compose file, relative to its folder as compose resolves it. */
export function hostPath(path: string): string {
  return isAbsolute(path) ? path : join(ROOT, path);
}

/** An env file as compose 1.29 reads it: `KEY=VALUE` lines, `#` comments and blank lines skipped, no quoting. */
export function parseEnvFile(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const at = line.indexOf('=');
    if (at <= 0) throw new Error(`env file line without KEY=: ${line}`);
    values.set(line.slice(0, at), line.slice(at + 1));
  }
  return values;
}

/** The environment of a service's containers: its env files, then `environment:` over them. */
export async function serviceEnvironment(
  service: ComposeService,
): Promise<{ env: Map<string, string>; fromEnvFile: Map<string, string> }> {
  const fromEnvFile = new Map<string, string>();
  const files = service.env_file === undefined ? [] : [service.env_file].flat();
  for (const file of files)
    for (const [key, value] of parseEnvFile(await readFile(hostPath(file), 'utf8')))
      fromEnvFile.set(key, value);
  const env = new Map(fromEnvFile);
  for (const [key, value] of Object.entries(service.environment ?? {}))
    env.set(key, value === null ? '' : String(value));
  return { env, fromEnvFile };
}

/** `15s`, `1m30s`, `500ms` (compose durations) in ms. */
export function durationMs(text: string): number {
  let total = 0;
  let rest = text;
  const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
  while (rest !== '') {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)/.exec(rest);
    if (match === null) throw new Error(`not a compose duration: ${text}`);
    total += Number(match[1]) * units[match[2]!]!;
    rest = rest.slice(match[0].length);
  }
  return total;
}

/** Whether Ferry reads a variable: the fixed list, secret values, services' baseUrl overrides. */
export function ferryReads(name: string): boolean {
  return (
    ENV_VARIABLES.includes(name) ||
    /^FERRY_SECRET_[A-Za-z0-9_]+$/.test(name) ||
    /^FERRY_SERVICE_[A-Z0-9_]+_URL$/.test(name)
  );
}

/** The commands `ferry --help` lists. */
export async function ferryCommands(): Promise<Set<string>> {
  const help = await runFerry(['--help']);
  expect(help.code).toBe(0);
  const commands = help.stdout.split('Commands:')[1]!.split('Examples:')[0]!;
  return new Set([...commands.matchAll(/^ {2}([a-z-]+)/gm)].map((match) => match[1]!));
}
