/**
 * docs/api.md stays true (STYLE rule 5): every route the API registers is in its routes table, and every API
 * error type is in its errors table, and neither names one that does not exist.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { API_ERROR_TYPES } from '../../src/api/errors.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { startTestApi } from '../helpers/api.ts';
import { ROOT } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const doc = await readFile(join(ROOT, 'docs', 'api.md'), 'utf8');

/** `METHOD /path` of each row of the routes table (`:param` as written; `?query` dropped). */
function documentedRoutes(): Set<string> {
  const routes = new Set<string>();
  for (const match of doc.matchAll(/^\| (GET|POST|PUT|PATCH|DELETE) +\| `([^`]+)`/gm)) {
    routes.add(`${match[1]} ${match[2]!.replace(/\?.*$/, '')}`);
  }
  return routes;
}

describe('docs/api.md', () => {
  it('lists every /v1, health and metrics route the API registers, and no other', async () => {
    const config = parseServicesConfig(
      {
        services: {
          svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } },
        },
      },
      { env: {} },
    );
    const api = await startTestApi({ redisUrl: redis.url, prefix: uniquePrefix(), config });
    const registered = api.routes.filter((route) =>
      /^(GET|POST|PUT|PATCH|DELETE) \/(v1\/|healthz|readyz|metrics)/.test(route),
    );
    const documented = [...documentedRoutes()].filter((route) => !/ \/(docs|admin)/.test(route));
    expect(registered.filter((route) => !documented.includes(route))).toEqual([]);
    expect(documented.filter((route) => !registered.includes(route))).toEqual([]);
  });

  it('has a row for every API error type and names no other', () => {
    const documented = new Set([...doc.matchAll(/^\| \d{3} +\| `(\w+)`/gm)].map((match) => match[1]!));
    for (const type of API_ERROR_TYPES) expect(documented, type).toContain(type);
    const known = new Set<string>([...API_ERROR_TYPES, 'ValidationError']);
    expect([...documented].filter((type) => !known.has(type))).toEqual([]);
  });
});
