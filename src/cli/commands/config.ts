import type { Command } from 'commander';

import { type CliIo, processIo } from '../io.ts';
import { EXIT_FAILURE, printJson } from '../output.ts';

export function registerConfigCommand(program: Command, io: CliIo = processIo()): void {
  const config = program
    .command('config')
    .description('services file tools')
    .addHelpText(
      'after',
      '\nExamples:\n  $ ferry config check\n  $ ferry config check ./prod.services.yaml --json\n',
    );
  config
    .command('check [file]')
    .description(
      'validate a services file without starting anything (default: FERRY_SERVICES or ./ferry.services.yaml)',
    )
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nExamples:\n  $ ferry config check\n  $ ferry config check ./prod.services.yaml --json\n',
    )
    .action(async (file: string | undefined, options: { json?: boolean }) => {
      const [{ checkServicesFile, loadServicesFile }, { checkEgress }] = await Promise.all([
        import('../../core/services/load.ts'),
        import('../egress-check.ts'),
      ]);
      const path = file ?? process.env.FERRY_SERVICES ?? './ferry.services.yaml';
      const result = await checkServicesFile(path);
      // Valid, but would every call be refused? (An env override or a static host pointing at a range the
      // service refuses; issue 13.) Warnings, not problems: the exit code stays 0.
      const warnings = result.ok ? await checkEgress(await loadServicesFile(path)) : [];
      if (options.json === true) {
        printJson({ file: path, ...result, ...(result.ok ? { warnings } : {}) }, io.stdout);
      } else if (result.ok) {
        io.stdout.write(
          `ok: ${path} (${result.services.length} service(s): ${result.services.join(', ')})\n`,
        );
        for (const warning of warnings) io.stderr.write(`warning: ${warning.path}: ${warning.message}\n`);
      } else {
        io.stderr.write(`${path}: ${result.issues.length} problem(s)\n`);
        for (const issue of result.issues) io.stderr.write(`  ${issue.path}: ${issue.message}\n`);
      }
      if (!result.ok) io.exitCode = EXIT_FAILURE;
    });
}
