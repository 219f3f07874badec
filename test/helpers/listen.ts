import { once } from 'node:events';
import type { Server } from 'node:http';

import { registerCleanup } from './cleanup.ts';

export interface Listening {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** Closes the server, open connections included; idempotent. Also runs when the test (or file) finishes. */
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 on a free port; the server is closed when the current test (or the file) finishes. */
export async function listenOnFreePort(server: Server): Promise<Listening> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
    return closed;
  };
  registerCleanup(close);
  return { url: `http://127.0.0.1:${address.port}`, close };
}
