// @ts-check
/**
 * Lint for Ferry. Three jobs, in order of importance:
 *  1. The dependency rule of STYLE.md §1 ("Dependency rule" table): one `import-x/no-restricted-paths` zone per
 *     row, plus `import-x/no-cycle`. A broken rule is a lint error, not a review comment.
 *  2. The import conventions: `.ts` on every relative specifier (tsconfig `rewriteRelativeImportExtensions`),
 *     `import type` for type-only imports (`verbatimModuleSyntax`), sorted imports.
 *  3. typescript-eslint's recommended set, plus the few type-aware rules that find real bugs in queue code
 *     (floating and misused promises).
 */
import { defineConfig } from 'eslint/config';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import simpleImportSort from 'eslint-plugin-simple-import-sort';
import tseslint from 'typescript-eslint';

/**
 * STYLE.md's dependency table: one zone per folder of src/ except cli, the composition root.
 * docs/architecture.md § Dependency rule shows each zone beside what the folder imports today, and
 * test/docs/architecture.test.ts keeps the two in step: a new folder or zone, or a changed allow-list, needs
 * its doc row. Each zone is an allow-list: `from: './src'` with the permitted folders in
 * `except`, so a new folder, or `src/index.ts`, is forbidden until the table says otherwise. Type-only
 * imports count: a type is a dependency too (breakers gets a RedisLike interface, not core's types).
 */
const layer = (target, allowed, row) => ({
  target: `./src/${target}`,
  from: './src',
  except: [`./${target}`, ...allowed.map((name) => `./${name}`)],
  message: `STYLE.md dependency rule: src/${target} ${row}`,
});

const dependencyZones = [
  layer('core', [], 'imports only core'),
  layer('breakers', [], 'imports nothing from src/ (inject a RedisLike interface instead)'),
  layer('producer', ['core'], 'imports only core'),
  layer('secrets', ['core'], 'imports only core'),
  layer('dead-letter', ['core'], 'imports only core'),
  layer('metrics', ['core'], 'imports only core'),
  layer(
    'worker',
    ['core', 'breakers', 'secrets', 'dead-letter', 'metrics'],
    'imports core, breakers, secrets, dead-letter and metrics; never producer, api or cli',
  ),
  layer(
    'api',
    ['core', 'producer', 'dead-letter', 'secrets', 'breakers', 'metrics', 'ops'],
    'imports core, producer, dead-letter, secrets, breakers, metrics and ops; never worker or cli',
  ),
  // Operator actions, the one home of what the CLI and the API do for an operator (status, breakers, queues,
  // schedules, retry plan, dead-letter replay/purge/reindex, the staged-secret test), so both do the same thing
  // and stay thin adapters. Worker and producer never import it (their rows above leave it out), and it never
  // imports the worker: the secret test's live call is the worker's HTTP layer, injected by cli/ as a
  // SecretProbe (secrets/secret-test.ts), hence secrets here (for key names, the resolver and those types).
  layer(
    'ops',
    ['core', 'dead-letter', 'breakers', 'secrets'],
    'imports core, dead-letter, breakers and secrets only (never worker: inject what it needs)',
  ),
  // src/cli: anything (composition root). src/index.ts: re-exports only.
  {
    target: './src',
    from: ['./test', './bench', './chaos'],
    message: 'src/ never imports test helpers, benches or the chaos suite (they are not published).',
  },
];

/**
 * Inside a layer: the delivery path takes its dead-letter helpers from the writer (dead-letter/writer.ts);
 * dead-letter/reconciler.ts is the background sweep, which only the worker pool runs (service-runtime.ts).
 */
const moduleZones = [
  {
    target: './src/worker/!(service-runtime).ts',
    from: './src/dead-letter/reconciler.ts',
    message:
      'reconciler.ts is the failed-set sweep (service-runtime.ts runs it): take dead-letter helpers from writer.ts',
  },
];

export default defineConfig(
  {
    name: 'ferry/ignores',
    ignores: ['dist/', '.bench-build/', 'node_modules/', '.ferry/', 'coverage/', 'test/artifacts/'],
  },

  ...tseslint.configs.recommended,

  {
    name: 'ferry/all',
    files: ['**/*.{ts,js}'],
    plugins: {
      'import-x': importX,
      'simple-import-sort': simpleImportSort,
    },
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: 'module',
    },
    linterOptions: {
      reportUnusedDisableDirectives: 'error',
    },
    settings: {
      // Without these two, import-x parses only .js dependencies and no-cycle silently finds nothing.
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/external-module-folders': ['node_modules', 'node_modules/@types'],
      // Relative imports name the real `.ts` file, so plain node resolution finds them; packages resolve
      // through node_modules with their `exports`. No TypeScript resolver needed (or installed).
      'import-x/resolver-next': [
        createNodeResolver({
          extensions: ['.ts', '.js', '.mjs', '.cjs', '.json', '.node'],
          conditionNames: ['types', 'import', 'node', 'default'],
        }),
      ],
    },
    rules: {
      // A few bug-finders from eslint:recommended that TypeScript does not cover (@eslint/js is not a
      // dependency, so they are listed rather than extended).
      'no-async-promise-executor': 'error',
      'no-constant-binary-expression': 'error',
      'no-self-compare': 'error',
      'no-unsafe-finally': 'error',
      'no-console': 'error',

      '@typescript-eslint/consistent-type-imports': [
        'error',
        { prefer: 'type-imports', fixStyle: 'inline-type-imports' },
      ],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],

      'simple-import-sort/imports': 'error',
      'simple-import-sort/exports': 'error',

      // `.ts` on every relative specifier; never on packages. `./x.js` is refused too: under nodenext tsc
      // would map it to x.ts, so only lint can keep the one spelling STYLE.md §1 picked.
      'import-x/extensions': [
        'error',
        'ignorePackages',
        { checkTypeImports: true, pattern: { ts: 'always', js: 'never', mjs: 'never', cjs: 'never' } },
      ],
      // If the resolver cannot see a module, no-restricted-paths and no-cycle cannot either: keep it honest.
      'import-x/no-unresolved': 'error',
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-self-import': 'error',
      'import-x/no-restricted-paths': ['error', { zones: [...dependencyZones, ...moduleZones] }],
    },
  },

  {
    name: 'ferry/type-aware',
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // A dropped promise in a worker is a lost job outcome or an unhandled rejection that kills the process.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
    },
  },

  {
    name: 'ferry/console-allowed',
    // The CLI prints; benches print their figures.
    files: ['src/cli/**', 'bench/**'],
    rules: { 'no-console': 'off' },
  },

  {
    name: 'ferry/tests',
    files: ['test/**'],
    rules: {
      // Tests may print diagnostics while debugging, but should not ship them.
      'no-console': 'warn',
    },
  },
);
