/**
 * Egress policy (issue 13 item 3): which addresses a call may reach. Pure: parsing and classifying addresses
 * and CIDRs, and the one decision the worker makes at dial time on every resolved address (so DNS
 * rebinding cannot pass it) and `ferry config check` makes on env overrides. Nothing here resolves a name.
 *
 * The rules (docs/services-file.md, "Egress"):
 * - link-local and cloud-metadata addresses are always refused;
 * - private, loopback, CGNAT, multicast, unspecified, broadcast and reserved ranges are refused unless the
 *   host was written literally in the services file, or the service allows them (`egress.allowPrivate`, or
 *   an `egress.allow` CIDR or host name);
 * - IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4) is unwrapped first; every IPv4 spelling WHATWG
 *   URL and inet_aton accept (decimal `2130706433`, octal `0177.0.0.1`, hex `0x7f.0.0.1`, short `127.1`) is
 *   normalised.
 */
import { isIPv6 } from 'node:net';

/** An IP address as bytes: 4 for IPv4, 16 for IPv6 (plain arrays, so a deep-frozen config can hold them). */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly bytes: readonly number[];
}

/**
 * The range an address falls in. `linkLocal` and `metadata` are always refused; `public` is always allowed;
 * the others only for a literal host or an allowance.
 */
export type AddressRange =
  | 'public'
  | 'metadata'
  | 'linkLocal'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'multicast'
  | 'unspecified'
  | 'broadcast'
  | 'reserved';

/** One `egress.allow` entry, parsed at load. */
export type AllowEntry =
  | { readonly kind: 'cidr'; readonly source: string; readonly network: IpAddress; readonly prefix: number }
  | { readonly kind: 'host'; readonly source: string; readonly name: string };

/** A service's `egress:` options, parsed. */
export interface EgressRules {
  /** Private, loopback, CGNAT, multicast and reserved ranges allowed for any host (never link-local). */
  readonly allowPrivate: boolean;
  /** CIDRs and host names whose private addresses are allowed. */
  readonly allow: readonly AllowEntry[];
}

export const NO_EGRESS_ALLOWANCES: EgressRules = Object.freeze({
  allowPrivate: false,
  allow: Object.freeze([]),
});

export type EgressVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly range: Exclude<AddressRange, 'public'>; readonly address: string };

const ALWAYS_REFUSED: ReadonlySet<AddressRange> = new Set(['metadata', 'linkLocal']);

export function isAlwaysRefused(range: AddressRange): boolean {
  return ALWAYS_REFUSED.has(range);
}

/**
 * IPv4 in any spelling WHATWG URL's host parser accepts (1 to 4 dot-separated parts, each decimal, octal with
 * a leading 0, or hex with 0x; the last part fills the remaining bytes; one trailing dot). Undefined when the
 * text is not an IPv4 address (then it is a host name).
 */
export function parseIPv4(text: string): IpAddress | undefined {
  const parts = text.split('.');
  if (parts.length > 1 && parts.at(-1) === '') parts.pop();
  if (parts.length === 0 || parts.length > 4) return undefined;
  const numbers: number[] = [];
  for (const part of parts) {
    const value = parseIPv4Part(part);
    if (value === undefined) return undefined;
    numbers.push(value);
  }
  const last = numbers.pop() as number;
  if (numbers.some((n) => n > 255) || last >= 256 ** (4 - numbers.length)) return undefined;
  let value = last;
  numbers.forEach((n, i) => {
    value += n * 256 ** (3 - i);
  });
  return { family: 4, bytes: [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255] };
}

function parseIPv4Part(part: string): number | undefined {
  let digits = part;
  let radix = 10;
  if (/^0x/i.test(part)) [digits, radix] = [part.slice(2), 16];
  else if (part.length > 1 && part.startsWith('0')) [digits, radix] = [part.slice(1), 8];
  if (digits === '') return radix === 10 ? undefined : 0;
  const pattern = radix === 16 ? /^[0-9a-f]+$/i : radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!pattern.test(digits)) return undefined;
  const value = parseInt(digits, radix);
  return Number.isSafeInteger(value) ? value : undefined;
}

/** IPv6, with or without brackets, with a dotted IPv4 tail; a zone id (`%eth0`) is dropped. */
export function parseIPv6(text: string): IpAddress | undefined {
  let inner = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const zone = inner.indexOf('%');
  if (zone !== -1) inner = inner.slice(0, zone);
  if (!isIPv6(inner)) return undefined;
  let groups: number[] = [];
  const tailIPv4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(inner);
  let head = inner;
  let tail: number[] = [];
  if (tailIPv4 !== null) {
    const v4 = parseIPv4(tailIPv4[1] as string);
    if (v4 === undefined) return undefined;
    const [a, b, c, d] = v4.bytes as [number, number, number, number];
    tail = [(a << 8) | b, (c << 8) | d];
    head = inner.slice(0, -(tailIPv4[1] as string).length);
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const hex = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const gap = head.indexOf('::');
  if (gap === -1) {
    groups = [...hex(head), ...tail];
  } else {
    const left = hex(head.slice(0, gap));
    const right = [...hex(head.slice(gap + 2)), ...tail];
    groups = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  }
  if (groups.length !== 8) return undefined;
  return { family: 6, bytes: groups.flatMap((g) => [g >> 8, g & 255]) };
}

/** An IP literal in any accepted spelling (IPv4 first, as WHATWG URL does), else undefined (a host name). */
export function parseIpAddress(text: string): IpAddress | undefined {
  return text.includes(':') || text.startsWith('[') ? parseIPv6(text) : parseIPv4(text);
}

/**
 * The IPv4 address an IPv6 address stands for, when it embeds one a packet will really go to: IPv4-mapped
 * `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (deprecated, still routed by some stacks), NAT64
 * `64:ff9b::a.b.c.d` (RFC 6052) and 6to4 `2002:aabb:ccdd::/48` (RFC 3056). Anything else is returned as is.
 */
export function unwrapAddress(address: IpAddress): IpAddress {
  if (address.family === 4) return address;
  const b = address.bytes;
  const zeros = (from: number, to: number): boolean => b.slice(from, to).every((x) => x === 0);
  const v4 = (from: number): IpAddress => ({ family: 4, bytes: b.slice(from, from + 4) });
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return v4(12);
  // ::/96 with a non-zero IPv4 part past 0.0.0.1 (`::` and `::1` are IPv6's own unspecified and loopback).
  if (zeros(0, 12) && !zeros(12, 15)) return v4(12);
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return v4(12);
  if (b[0] === 0x20 && b[1] === 0x02) return v4(2);
  return address;
}

type Rule = readonly [network: string, prefix: number, range: AddressRange];

/** First match wins, so the narrow metadata entries come before the ranges that hold them. */
const IPV4_RULES: readonly Rule[] = [
  ['169.254.169.254', 32, 'metadata'], // AWS, GCP, Azure, OpenStack, DigitalOcean…
  ['100.100.100.200', 32, 'metadata'], // Alibaba Cloud
  ['168.63.129.16', 32, 'metadata'], // Azure WireServer
  ['169.254.0.0', 16, 'linkLocal'],
  ['0.0.0.0', 32, 'unspecified'],
  ['0.0.0.0', 8, 'reserved'], // "this network": Linux connects 0.x to the local host
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['127.0.0.0', 8, 'loopback'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'], // IETF protocol assignments (192.0.0.192: Oracle Cloud metadata)
  ['192.0.2.0', 24, 'reserved'], // documentation
  ['192.88.99.0', 24, 'reserved'], // 6to4 relay anycast
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'reserved'], // benchmarking
  ['198.51.100.0', 24, 'reserved'], // documentation
  ['203.0.113.0', 24, 'reserved'], // documentation
  ['224.0.0.0', 4, 'multicast'],
  ['255.255.255.255', 32, 'broadcast'],
  ['240.0.0.0', 4, 'reserved'],
];

const IPV6_RULES: readonly Rule[] = [
  ['fd00:ec2::254', 128, 'metadata'], // AWS (IPv6)
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['::', 96, 'reserved'], // what unwrapAddress left: IPv4-compatible 0.0.0.x
  ['64:ff9b:1::', 48, 'reserved'], // local-use NAT64 (RFC 8215)
  ['100::', 64, 'reserved'], // discard-only
  ['2001::', 23, 'reserved'], // IETF protocol assignments, Teredo included
  ['2001:db8::', 32, 'reserved'], // documentation
  ['3fff::', 20, 'reserved'], // documentation (RFC 9637)
  ['5f00::', 16, 'reserved'], // SRv6 SIDs
  ['fc00::', 7, 'private'], // unique local
  ['fe80::', 10, 'linkLocal'],
  ['fec0::', 10, 'private'], // site-local (deprecated)
  ['ff00::', 8, 'multicast'],
];

interface CompiledRule {
  readonly network: IpAddress;
  readonly prefix: number;
  readonly range: AddressRange;
}

const compileRules = (rules: readonly Rule[]): CompiledRule[] =>
  rules.map(([network, prefix, range]) => ({ network: parseIpAddress(network) as IpAddress, prefix, range }));
const V4 = compileRules(IPV4_RULES);
const V6 = compileRules(IPV6_RULES);

/** Whether `address` lies in `network/prefix` (same family only). */
export function isInNetwork(address: IpAddress, network: IpAddress, prefix: number): boolean {
  if (address.family !== network.family) return false;
  let bits = prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((address.bytes[i] as number) & mask) !== ((network.bytes[i] as number) & mask)) return false;
  }
  return true;
}

/** The range of an address, after unwrapping an embedded IPv4 address. */
export function classifyAddress(address: IpAddress): AddressRange {
  const target = unwrapAddress(address);
  const rules = target.family === 4 ? V4 : V6;
  return rules.find((rule) => isInNetwork(target, rule.network, rule.prefix))?.range ?? 'public';
}

/** `127.0.0.1`, `::1`: the canonical text of an address (IPv6 without zero compression, for messages). */
export function formatAddress(address: IpAddress): string {
  if (address.family === 4) return address.bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2)
    groups.push((((address.bytes[i] as number) << 8) | (address.bytes[i + 1] as number)).toString(16));
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

const HOST_LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/** A host name as `egress.allow` and the dial-time check compare it: lower case, no trailing dot. */
export function normalizeHostName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** Parses one `egress.allow` entry: a CIDR (`10.1.2.0/24`, `fd00::/8`), an IP address, or a host name. */
export function parseAllowEntry(source: string): AllowEntry | undefined {
  const slash = source.indexOf('/');
  if (slash !== -1) {
    const prefixText = source.slice(slash + 1);
    const network = parseIpAddress(source.slice(0, slash));
    if (network === undefined || !/^\d{1,3}$/.test(prefixText)) return undefined;
    const prefix = Number(prefixText);
    if (prefix > (network.family === 4 ? 32 : 128)) return undefined;
    return { kind: 'cidr', source, network, prefix };
  }
  const address = parseIpAddress(source);
  if (address !== undefined)
    return { kind: 'cidr', source, network: address, prefix: address.family === 4 ? 32 : 128 };
  const name = normalizeHostName(source);
  if (name.length > 253 || !name.split('.').every((label) => HOST_LABEL.test(label))) return undefined;
  return { kind: 'host', source, name };
}

export interface EgressSubject {
  /** The host name the URL names, or the IP literal. */
  readonly hostname: string;
  /** Whether scheme, host and port were all written literally in the services file. */
  readonly isLiteralHost: boolean;
}

/**
 * The decision for one address a call would connect to. Always-refused ranges lose to everything; then a
 * public address, a literal host, `allowPrivate`, an allowed host name or an allowed CIDR is enough.
 */
export function decideEgress(address: IpAddress, subject: EgressSubject, rules: EgressRules): EgressVerdict {
  const range = classifyAddress(address);
  if (range === 'public') return { allowed: true };
  const refused: EgressVerdict = { allowed: false, range, address: formatAddress(unwrapAddress(address)) };
  if (isAlwaysRefused(range)) return refused;
  if (subject.isLiteralHost || rules.allowPrivate) return { allowed: true };
  const host = normalizeHostName(subject.hostname);
  const target = unwrapAddress(address);
  for (const entry of rules.allow) {
    if (entry.kind === 'host' ? entry.name === host : isAllowedBy(entry, address, target))
      return { allowed: true };
  }
  return refused;
}

function isAllowedBy(
  entry: Extract<AllowEntry, { kind: 'cidr' }>,
  address: IpAddress,
  target: IpAddress,
): boolean {
  return (
    isInNetwork(address, entry.network, entry.prefix) || isInNetwork(target, entry.network, entry.prefix)
  );
}

const RANGE_WORDS: Readonly<Record<Exclude<AddressRange, 'public'>, string>> = {
  metadata: 'a cloud metadata address',
  linkLocal: 'a link-local address',
  loopback: 'a loopback address',
  private: 'a private address',
  cgnat: 'a carrier-grade NAT address',
  multicast: 'a multicast address',
  unspecified: 'the unspecified address',
  broadcast: 'the broadcast address',
  reserved: 'a reserved address',
};

/**
 * The message of a refusal: what was refused and which setting allows it. `label` names the host without a
 * value a secret may have filled (`the host of baseUrl "https://{{ secrets.crm_host }}"`): a message never
 * carries a secret value, and the address is left out for the same reason (it tells where a secret points).
 */
export function describeRefusal(
  service: string,
  label: string,
  verdict: Extract<EgressVerdict, { allowed: false }>,
): string {
  const refusedAs = `egress refused: ${label} is ${RANGE_WORDS[verdict.range]}`;
  if (isAlwaysRefused(verdict.range))
    return `${refusedAs}, which is always refused (link-local and cloud metadata; service "${service}")`;
  return (
    `${refusedAs}, and the host is not written literally in the services file; allow it with ` +
    `services.${service}.egress.allow (a CIDR or host name) or egress.allowPrivate: true`
  );
}
