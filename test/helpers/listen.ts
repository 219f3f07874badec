import { once } from 'node:events';
import type { Server } from 'node:http';

import { onTestFinished } from 'vitest';

/**
 * Listens on 127.0.0.1 (a free port) and closes the server, open connections included, when the current test
 * finishes. Returns the base URL.
 */
export async function listenForTest(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  onTestFinished(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  return `http://127.0.0.1:${address.port}`;
}
