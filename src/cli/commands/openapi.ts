import type { Command } from 'commander';

import { type CliIo, processIo } from '../io.ts';
import { UsageError } from '../output.ts';

export function registerOpenapiCommand(program: Command, io: CliIo = processIo()): void {
  program
    .command('openapi')
    .description(
      "print the HTTP API's OpenAPI 3.1 document (what `ferry api` serves at /docs/json) without Redis or a services file",
    )
    .option('--yaml', 'print YAML instead of JSON')
    .option('--server <url>', 'the API URL to put in `servers` (default: relative to the document)')
    .addHelpText(
      'after',
      '\nExamples:\n  $ ferry openapi > openapi.json\n  $ ferry openapi --yaml --server https://ferry.internal:8080 > openapi.yaml\n',
    )
    .action(async (options: { yaml?: boolean; server?: string }) => {
      if (options.server !== undefined && !URL.canParse(options.server))
        throw new UsageError(`--server: not a URL: ${options.server}`);
      const [{ buildOpenApiDocument }, yaml] = await Promise.all([
        import('../openapi-document.ts'),
        import('js-yaml'),
      ]);
      const document = await buildOpenApiDocument(
        options.server === undefined ? {} : { server: options.server },
      );
      io.stdout.write(
        options.yaml === true
          ? yaml.dump(document, { noRefs: true })
          : `${JSON.stringify(document, null, 2)}\n`,
      );
    });
}
