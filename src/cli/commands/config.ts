import type { Command } from 'commander';

import { EXIT_FAILURE, printJson } from '../output.ts';

export function registerConfigCommand(program: Command): void {
  const config = program.command('config').description('services file tools');
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
      const { checkServicesFile } = await import('../../core/services/load.ts');
      const path = file ?? process.env.FERRY_SERVICES ?? './ferry.services.yaml';
      const result = await checkServicesFile(path);
      if (options.json === true) {
        printJson({ file: path, ...result });
      } else if (result.ok) {
        process.stdout.write(
          `ok: ${path} (${result.services.length} service(s): ${result.services.join(', ')})\n`,
        );
      } else {
        process.stderr.write(`${path}: ${result.issues.length} problem(s)\n`);
        for (const issue of result.issues) process.stderr.write(`  ${issue.path}: ${issue.message}\n`);
      }
      if (!result.ok) process.exitCode = EXIT_FAILURE;
    });
}
