/**
 * Test certificates made with the `openssl` CLI (node:crypto cannot write X.509): a CA, a server certificate
 * for 127.0.0.1 and localhost, two client certificates the CA signed (the second with a passphrase-protected
 * key, for rotation) and one it did not (self-signed). Make them once per test file: each costs some 50 ms.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import type { Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:https';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';

import { registerCleanup } from './cleanup.ts';
import { listenOnFreePort } from './listen.ts';
import { tempDir } from './processes.ts';
import { waitUntil } from './until.ts';

const run = promisify(execFile);

export interface TestCertificates {
  /** The directory holding them (`ca.crt`, `server.crt`, `server.key`, …). */
  dir: string;
  /** PEM of the test CA's certificate. */
  ca: string;
  server: { cert: string; key: string };
  /** Signed by the CA, subject CN=client-a. */
  clientA: { cert: string; key: string };
  /** Signed by the CA, subject CN=client-b; its key is encrypted with `passphrase`. */
  clientB: { cert: string; key: string; passphrase: string };
  /** Self-signed, subject CN=intruder: the server refuses it. */
  intruder: { cert: string; key: string };
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];

export async function makeTestCertificates(): Promise<TestCertificates> {
  const dir = await tempDir('ferry-certs');
  const at = (name: string): string => join(dir, name);
  const openssl = (...args: string[]) => run('openssl', args, { cwd: dir });
  await openssl(
    'req',
    '-x509',
    ...EC,
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '3',
    '-subj',
    '/CN=Ferry Test CA',
  );
  const signed = async (name: string, subject: string, ext: string): Promise<void> => {
    await openssl('req', ...EC, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
    await writeFile(at(`${name}.ext`), ext);
    await openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    );
  };
  await signed(
    'server',
    '/CN=localhost',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  await signed('client-a', '/CN=client-a', 'extendedKeyUsage=clientAuth\n');
  await signed('client-b', '/CN=client-b', 'extendedKeyUsage=clientAuth\n');
  const passphrase = 'pass-phrase-7f3e91c2';
  await openssl(
    'pkcs8',
    '-topk8',
    '-v2',
    'aes-256-cbc',
    '-in',
    'client-b.key',
    '-out',
    'client-b.enc.key',
    '-passout',
    `pass:${passphrase}`,
  );
  await openssl(
    'req',
    '-x509',
    ...EC,
    '-nodes',
    '-keyout',
    'intruder.key',
    '-out',
    'intruder.crt',
    '-days',
    '2',
    '-subj',
    '/CN=intruder',
  );
  const read = (name: string): Promise<string> => readFile(at(name), 'utf8');
  return {
    dir,
    ca: await read('ca.crt'),
    server: { cert: await read('server.crt'), key: await read('server.key') },
    clientA: { cert: await read('client-a.crt'), key: await read('client-a.key') },
    clientB: { cert: await read('client-b.crt'), key: await read('client-b.enc.key'), passphrase },
    intruder: { cert: await read('intruder.crt'), key: await read('intruder.key') },
  };
}

export interface OpensslServer {
  /** `https://127.0.0.1:<port>` */
  url: string;
}

/**
 * `openssl s_server -www` requiring a client certificate the test CA signed: unlike Node's https server (which
 * drops a refused client without a word), OpenSSL sends a TLS alert (unknown_ca, bad_certificate,
 * certificate_required), as nginx, Envoy and Go servers do. Answers a GET with a status page. Stopped when the
 * test (or file) finishes.
 */
export async function startOpensslMtlsServer(certs: TestCertificates): Promise<OpensslServer> {
  const probe = createNetServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  const child = spawn(
    'openssl',
    [
      's_server',
      '-accept',
      `127.0.0.1:${port}`,
      '-Verify',
      '1',
      '-verify_return_error',
      '-CAfile',
      'ca.crt',
      '-cert',
      'server.crt',
      '-key',
      'server.key',
      '-www',
    ],
    { cwd: certs.dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  registerCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  await waitUntil(
    () => output.includes('ACCEPT') || child.exitCode !== null,
    10_000,
    'openssl s_server ready',
  );
  if (!output.includes('ACCEPT')) throw new Error(`openssl s_server did not start: ${output}`);
  return { url: `https://127.0.0.1:${port}` };
}

export interface MtlsServer {
  url: string;
  /** The client certificate subject CN of each request. */
  subjects: string[];
}

/**
 * An HTTPS server (node:https) on 127.0.0.1 that requires a client certificate the test CA signed; answers its CN. Node drops a
 * client it refuses without a TLS alert (see startOpensslMtlsServer).
 */
export async function startMtlsServer(material: TestCertificates): Promise<MtlsServer> {
  const subjects: string[] = [];
  const server: Server = createServer(
    {
      key: material.server.key,
      cert: material.server.cert,
      ca: material.ca,
      requestCert: true,
      rejectUnauthorized: true,
    },
    (request, response) => {
      const peer = (request.socket as TLSSocket).getPeerCertificate();
      const cn = String(peer.subject?.CN ?? '');
      subjects.push(cn);
      request.resume();
      request.on('end', () => {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ cn }));
      });
    },
  );
  const listening = await listenOnFreePort(server as unknown as HttpServer);
  return { url: listening.url.replace('http:', 'https:'), subjects };
}
