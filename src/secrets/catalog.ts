/**
 * What `ferry secrets list` and the admin API show (issue 4: "names, versions, dates, which services use
 * them — values never"): every key in the encrypted store and every name a service references, with where
 * it is defined. A referenced name that no source defines is listed too (`definedIn: []`): jobs of that
 * service fail with ConfigurationError until someone sets it, and this is where an operator sees it first.
 */
import type { ServicesConfig } from '../core/services/types.ts';
import { parseSecretKey } from './names.ts';
import type { SecretInfo, SecretStore, VersionInfo } from './redis-store.ts';
import type { SecretSource } from './resolver.ts';

export interface SecretDescription {
  /** `crm_key` or `tenant/acme/crm_key`. */
  readonly key: string;
  readonly name: string;
  readonly tenant: string | undefined;
  /** Services whose templates reference `name`, sorted. */
  readonly usedBy: string[];
  /** The sources that hold this exact key, in lookup order; empty when none does. */
  readonly definedIn: SecretSource['kind'][];
  /** From the store; absent when the store does not hold the key. */
  readonly current?: VersionInfo;
  readonly staged?: VersionInfo;
  /** Earlier current versions in the store, newest first (rollback goes to the first). */
  readonly previous: VersionInfo[];
  readonly createdAt?: number;
  readonly updatedAt?: number;
}

export interface DescribeSecretsOptions {
  /** The store, with or without a master key (listing opens no value); undefined when there is none. */
  store: SecretStore | undefined;
  /** The process's sources in lookup order (a store source among them is not read: `store` answers). */
  sources: readonly SecretSource[];
  config: ServicesConfig;
}

/**
 * Every store key plus every referenced name, sorted by key. Asks the env and file sources whether they
 * hold each key; their answers are compared with undefined and dropped, never returned or logged.
 */
export async function describeSecrets(options: DescribeSecretsOptions): Promise<SecretDescription[]> {
  const { store, sources, config } = options;
  const infos = new Map<string, SecretInfo>();
  for (const info of store === undefined ? [] : await store.list()) infos.set(info.key, info);

  const usedBy = new Map<string, string[]>();
  for (const service of config.services.values()) {
    for (const name of service.secretNames) {
      const services = usedBy.get(name) ?? [];
      services.push(service.name);
      usedBy.set(name, services);
    }
  }

  const keys = [...new Set([...infos.keys(), ...usedBy.keys()])].sort();
  const kinds = lookupOrder(sources, store !== undefined);
  return Promise.all(
    keys.map(async (key): Promise<SecretDescription> => {
      const { name, tenant } = parseSecretKey(key);
      const info = infos.get(key);
      const definedIn: SecretSource['kind'][] = [];
      for (const kind of kinds) {
        if (await holds(kind, key, info, sources, store !== undefined)) definedIn.push(kind);
      }
      return {
        key,
        name,
        tenant,
        usedBy: [...(usedBy.get(name) ?? [])].sort(),
        definedIn,
        ...(info?.current === undefined ? {} : { current: info.current }),
        ...(info?.staged === undefined ? {} : { staged: info.staged }),
        previous: [...(info?.previous ?? [])],
        ...(info === undefined ? {} : { createdAt: info.createdAt, updatedAt: info.updatedAt }),
      };
    }),
  );
}

/** The kinds in the sources' order; the store first when it is given but not a source (no master key). */
function lookupOrder(sources: readonly SecretSource[], hasStore: boolean): SecretSource['kind'][] {
  const kinds = [...new Set(sources.map((source) => source.kind))];
  if (hasStore && !kinds.includes('store')) kinds.unshift('store');
  return kinds;
}

/** Whether `kind` holds `key`. The store answers from its listing (a current version), without decrypting. */
async function holds(
  kind: SecretSource['kind'],
  key: string,
  info: SecretInfo | undefined,
  sources: readonly SecretSource[],
  hasStore: boolean,
): Promise<boolean> {
  if (kind === 'store' && hasStore) return info?.current !== undefined;
  for (const source of sources) {
    if (source.kind === kind && (await source.read(key)) !== undefined) return true;
  }
  return false;
}
