import { describe, expect, it } from 'vitest';

import {
  type AddressRange,
  classifyAddress,
  decideEgress,
  describeRefusal,
  type EgressRules,
  formatAddress,
  NO_EGRESS_ALLOWANCES,
  parseAllowEntry,
  parseIpAddress,
} from '../../src/core/egress.ts';

describe('address spellings', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['2130706433', '127.0.0.1'], // decimal
    ['0177.0.0.1', '127.0.0.1'], // octal
    ['0x7f.0.0.1', '127.0.0.1'], // hex
    ['0x7F000001', '127.0.0.1'],
    ['127.1', '127.0.0.1'], // short: the last part fills the rest
    ['127.0.1', '127.0.0.1'],
    ['0x7f.1', '127.0.0.1'],
    ['017700000001', '127.0.0.1'],
    ['127.0.0.1.', '127.0.0.1'], // one trailing dot
    ['0', '0.0.0.0'],
    ['0x', '0.0.0.0'],
    ['::1', '::1'],
    ['[::1]', '::1'],
    ['::ffff:127.0.0.1', '::ffff:7f00:1'],
    ['[::ffff:7f00:1]', '::ffff:7f00:1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['64:ff9b::169.254.169.254', '64:ff9b::a9fe:a9fe'],
  ])('%s parses as %s', (text, canonical) => {
    const address = parseIpAddress(text);
    expect(address).toBeDefined();
    expect(formatAddress(address!)).toBe(canonical);
  });

  it.each([
    'example.com',
    'localhost',
    '1.2.3.4.5',
    '256.0.0.1',
    '08.0.0.1',
    '0x1g.0.0.1',
    '',
    '1..2',
    '::g',
  ])('%s is not an IP address', (text) => {
    expect(parseIpAddress(text)).toBeUndefined();
  });
});

describe('address ranges', () => {
  it.each<[string, AddressRange]>([
    // always refused
    ['169.254.169.254', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['fd00:ec2::254', 'metadata'],
    ['169.254.1.1', 'linkLocal'],
    ['fe80::1', 'linkLocal'],
    ['febf::1', 'linkLocal'],
    ['::ffff:169.254.169.254', 'metadata'], // IPv4-mapped, unwrapped first
    ['::169.254.169.254', 'metadata'], // IPv4-compatible
    ['64:ff9b::a9fe:a9fe', 'metadata'], // NAT64
    ['2002:a9fe:a9fe::', 'metadata'], // 6to4
    ['0251.0376.0251.0376', 'metadata'], // octal 169.254.169.254
    ['2852039166', 'metadata'], // decimal 169.254.169.254
    // refused unless literal or allowed
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['2130706433', 'loopback'],
    ['0177.0.0.1', 'loopback'],
    ['0x7f.0.0.1', 'loopback'],
    ['127.1', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::127.0.0.1', 'loopback'],
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['::ffff:10.0.0.1', 'private'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['0', 'unspecified'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['0.1.2.3', 'reserved'],
    ['192.0.2.1', 'reserved'],
    ['198.51.100.7', 'reserved'],
    ['203.0.113.9', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['2001:db8::1', 'reserved'],
    ['100::1', 'reserved'],
    // public
    ['8.8.8.8', 'public'],
    ['172.32.0.1', 'public'],
    ['100.128.0.1', 'public'],
    ['169.253.255.255', 'public'],
    ['::ffff:8.8.8.8', 'public'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['2606:4700::1111', 'public'],
  ])('%s is %s', (text, range) => {
    expect(classifyAddress(parseIpAddress(text)!)).toBe(range);
  });
});

describe('egress decision', () => {
  const rules = (allowPrivate: boolean, allow: string[]): EgressRules => ({
    allowPrivate,
    allow: allow.map((entry) => parseAllowEntry(entry)!),
  });
  const decide = (address: string, hostname: string, isLiteralHost: boolean, with_: EgressRules) =>
    decideEgress(parseIpAddress(address)!, { hostname, isLiteralHost }, with_).allowed;

  it.each<[string, string, boolean, EgressRules, boolean]>([
    ['8.8.8.8', 'dns.google', false, NO_EGRESS_ALLOWANCES, true],
    ['127.0.0.1', 'localhost', false, NO_EGRESS_ALLOWANCES, false],
    ['127.0.0.1', '127.0.0.1', true, NO_EGRESS_ALLOWANCES, true], // written literally in the file
    ['169.254.169.254', '169.254.169.254', true, NO_EGRESS_ALLOWANCES, false], // always refused
    ['169.254.169.254', 'x', false, rules(true, ['169.254.0.0/16', 'x']), false], // whatever allows it
    ['fd00:ec2::254', 'x', false, rules(true, []), false],
    ['10.1.2.3', 'api.internal', false, rules(true, []), true],
    ['10.1.2.3', 'api.internal', false, rules(false, ['10.1.2.0/24']), true],
    ['10.1.3.3', 'api.internal', false, rules(false, ['10.1.2.0/24']), false],
    ['10.9.9.9', 'API.internal.', false, rules(false, ['api.internal']), true],
    ['10.9.9.9', 'other.internal', false, rules(false, ['api.internal']), false],
    ['::ffff:10.1.2.3', 'x', false, rules(false, ['10.1.2.0/24']), true],
    ['fd00::5', 'x', false, rules(false, ['fd00::/8']), true],
    ['127.0.0.1', 'x', false, rules(false, ['127.0.0.1']), true],
  ])('%s for %s (literal %s) → %s', (address, hostname, isLiteralHost, with_, allowed) => {
    expect(decide(address, hostname, isLiteralHost, with_)).toBe(allowed);
  });

  it('names the setting that allows a refusal, and never the address a secret chose', () => {
    const verdict = decideEgress(
      parseIpAddress('10.0.0.7')!,
      { hostname: '10.0.0.7', isLiteralHost: false },
      NO_EGRESS_ALLOWANCES,
    );
    expect(verdict.allowed).toBe(false);
    if (verdict.allowed) return;
    const message = describeRefusal('crm', 'the host of baseUrl "https://{{ secrets.h }}"', verdict);
    expect(message).toContain('a private address');
    expect(message).toContain('services.crm.egress.allow');
    expect(message).toContain('egress.allowPrivate: true');
    expect(message).not.toContain('10.0.0.7');
  });
});

describe('egress.allow entries', () => {
  it.each([
    ['10.1.2.0/24', 'cidr'],
    ['fd00::/8', 'cidr'],
    ['127.0.0.1', 'cidr'],
    ['api.internal', 'host'],
    ['my_svc.default.svc.cluster.local', 'host'],
  ])('%s is a %s', (entry, kind) => {
    expect(parseAllowEntry(entry)?.kind).toBe(kind);
  });

  it.each(['10.1.2.0/33', '10.1.2.0/', '/24', 'fd00::/129', 'a b', 'http://x', '-x.internal', 'x..y', ''])(
    '%s is refused',
    (entry) => {
      expect(parseAllowEntry(entry)).toBeUndefined();
    },
  );
});
