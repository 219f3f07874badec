/**
 * `ferry config check`'s egress warnings (issue 13): a FERRY_SERVICE_<NAME>_URL override, or a baseUrl whose
 * host has no placeholder, that points at an address the worker would refuse. Uses the same classifier as
 * the worker's dial-time check (src/core/egress.ts), so the warning and the refusal cannot disagree. Host
 * names are resolved with the system resolver, each within a bound; one that does not resolve is skipped
 * (the check may run where production DNS is not reachable).
 */
import { lookup } from 'node:dns/promises';

import {
  classifyAddress,
  decideEgress,
  type EgressVerdict,
  formatAddress,
  type IpAddress,
  parseIpAddress,
  unwrapAddress,
} from '../core/egress.ts';
import { serviceUrlEnvName } from '../core/services/load.ts';
import type { ServiceConfig, ServicesConfig } from '../core/services/types.ts';

export interface EgressWarning {
  /** `services.crm.baseUrl`. */
  readonly path: string;
  readonly message: string;
}

/** Resolves a host name to its addresses (the system resolver by default; tests inject one). */
export type ResolveHost = (hostname: string) => Promise<readonly string[]>;

const RESOLVE_TIMEOUT_MS = 2_000;

const systemResolve: ResolveHost = async (hostname) =>
  (await lookup(hostname, { all: true })).map((entry) => entry.address);

export async function checkEgress(
  config: ServicesConfig,
  resolve: ResolveHost = systemResolve,
): Promise<EgressWarning[]> {
  const warnings = await Promise.all(
    [...config.services.values()].map((service) => checkService(service, resolve)),
  );
  return warnings.flat();
}

async function checkService(service: ServiceConfig, resolve: ResolveHost): Promise<EgressWarning[]> {
  const source = service.baseUrl.source;
  // A host a secret or the tenant fills is known only per job; the worker checks it then.
  if (source.includes('{{') && service.literalOrigin === undefined && !hasStaticHost(source)) return [];
  let url: URL;
  try {
    url = new URL(source.replaceAll(/\{\{[^}]*\}\}/g, 'x'));
  } catch {
    return [];
  }
  const hostname = url.hostname;
  const fromEnv = service.baseUrlFrom === 'env';
  const isLiteralHost = service.literalOrigin !== undefined && url.origin === service.literalOrigin;
  const literal = parseIpAddress(hostname);
  const addresses = literal !== undefined ? [literal] : await resolveWithin(resolve, hostname);
  const where = fromEnv ? `${serviceUrlEnvName(service.name)} (${hostname})` : `baseUrl host ${hostname}`;
  for (const address of addresses) {
    const verdict = decideEgress(address, { hostname, isLiteralHost }, service.egress);
    if (!verdict.allowed) {
      return [
        { path: `services.${service.name}.baseUrl`, message: describe(where, address, verdict, service) },
      ];
    }
  }
  return [];
}

/** `https://api.example.com/{{ secrets.x }}` and env overrides without a placeholder before the path. */
function hasStaticHost(source: string): boolean {
  const head = source.slice(0, source.indexOf('{{'));
  return /^https?:\/\/[^/]+\//i.test(head);
}

async function resolveWithin(resolve: ResolveHost, hostname: string): Promise<IpAddress[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<readonly string[]>((done) => {
    timer = setTimeout(() => done([]), RESOLVE_TIMEOUT_MS);
    timer.unref();
  });
  try {
    const found = await Promise.race([resolve(hostname).catch(() => [] as string[]), timeout]);
    return found.flatMap((text) => parseIpAddress(text) ?? []);
  } finally {
    clearTimeout(timer);
  }
}

function describe(
  where: string,
  address: IpAddress,
  verdict: Extract<EgressVerdict, { allowed: false }>,
  service: ServiceConfig,
): string {
  const range = classifyAddress(address);
  const shown = formatAddress(unwrapAddress(address));
  if (range === 'metadata' || range === 'linkLocal') {
    return `${where} points at ${shown}, a ${range === 'metadata' ? 'cloud metadata' : 'link-local'} address: every call will be refused (EgressDeniedError)`;
  }
  return (
    `${where} points at ${shown} (${verdict.range}), which service ${service.name} refuses for a host not ` +
    `written literally in the file: every call will be refused (EgressDeniedError); allow it with ` +
    `services.${service.name}.egress.allow or egress.allowPrivate: true`
  );
}
