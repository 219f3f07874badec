/**
 * The services file's top-level `schedules:` (docs/services-file.md § Schedules): parsed and checked here, on its
 * own, so that load.ts only calls compileSchedules. Each schedule becomes a BullMQ job scheduler the workers
 * keep equal to the file (src/worker/schedules.ts); its runs are ordinary jobs.
 */
import { getNextMillis } from 'bullmq';
import { z } from 'zod';

import { TENANT_PATTERN } from '../job.ts';
import { suggest } from './schema.ts';
import type { ScheduleConfig, ServiceConfig } from './types.ts';

/** Schedule names: like service names, so the scheduler id and the run's key stay plain (no `:` or spaces). */
export const SCHEDULE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const SCHEDULE_NAME_MESSAGE = 'schedule name must match [a-z0-9][a-z0-9_-]{0,63}';
/** The shortest `everyMs`: one run a second (a cron with a seconds field can go no faster either). */
export const MIN_EVERY_MS = 1000;

/** One `schedules.<name>.<path>: message` problem; load.ts formats the path. */
export interface ScheduleIssue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

const required = (expected: string) => (issue: { input?: unknown }) =>
  issue.input === undefined ? `required (${expected})` : `must be ${expected}`;

const scheduleSchema = z.strictObject(
  {
    cron: z.string({ error: required('a cron expression') }).optional(),
    tz: z.string({ error: required('an IANA time zone, e.g. Europe/Berlin') }).optional(),
    everyMs: z
      .number({ error: required(`an integer >= ${MIN_EVERY_MS}`) })
      .int({ error: `must be an integer >= ${MIN_EVERY_MS}` })
      .min(MIN_EVERY_MS, { error: `must be an integer >= ${MIN_EVERY_MS} (one run a second at most)` })
      .max(Number.MAX_SAFE_INTEGER, { error: 'is too large' })
      .optional(),
    service: z.string({ error: required('a service name') }),
    operation: z.string({ error: required('an operation name') }),
    input: z.unknown().optional(),
    tenant: z
      .string({ error: required('a tenant') })
      .regex(TENANT_PATTERN, { error: 'must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}' })
      .optional(),
  },
  {
    error: (issue) => {
      if (issue.code === 'invalid_type') return 'must be a mapping';
      return undefined;
    },
  },
);

/**
 * `schedules:` → ScheduleConfig by name. `raw` is the document's value (undefined: no schedules), `services` the
 * document's service names and the services that compiled (a schedule naming a service that failed to compile
 * is only checked for the service's existence, so its own issues are not reported twice). Issues are appended
 * to `issues`; a schedule with any issue is left out.
 */
export function compileSchedules(
  raw: unknown,
  serviceNames: ReadonlySet<string>,
  services: ReadonlyMap<string, ServiceConfig>,
  issues: ScheduleIssue[],
  now: number = Date.now(),
): Map<string, ScheduleConfig> {
  const schedules = new Map<string, ScheduleConfig>();
  if (raw === undefined || raw === null) return schedules;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    issues.push({ path: ['schedules'], message: 'must be a mapping of schedule names to schedules' });
    return schedules;
  }
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    const at = ['schedules', name];
    const before = issues.length;
    const add = (path: readonly PropertyKey[], message: string): void => {
      issues.push({ path: [...at, ...path], message });
    };
    if (!SCHEDULE_NAME_PATTERN.test(name)) add([], SCHEDULE_NAME_MESSAGE);
    const parsed = scheduleSchema.safeParse(value);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        if (issue.code !== 'unrecognized_keys') add(issue.path, issue.message);
        else for (const key of issue.keys) add([...issue.path, key], unknownKey(key));
      }
      continue;
    }
    const doc = parsed.data;
    let repeat: ScheduleConfig['repeat'] | undefined;
    if ((doc.cron === undefined) === (doc.everyMs === undefined)) {
      add([], 'needs exactly one of cron or everyMs');
    } else if (doc.everyMs !== undefined) {
      if (doc.tz !== undefined)
        add(['tz'], 'only with cron (everyMs counts milliseconds, not wall-clock time)');
      repeat = { kind: 'every', everyMs: doc.everyMs };
    } else if (doc.cron !== undefined) {
      const tzProblem = doc.tz === undefined ? undefined : checkTimeZone(doc.tz);
      if (tzProblem !== undefined) add(['tz'], tzProblem);
      const cronProblem = checkCron(doc.cron, tzProblem === undefined ? doc.tz : undefined, now);
      if (cronProblem !== undefined) add(['cron'], cronProblem);
      repeat = { kind: 'cron', cron: doc.cron.trim(), tz: doc.tz };
    }
    const service = services.get(doc.service);
    if (!serviceNames.has(doc.service)) {
      const known = [...serviceNames].join(', ') || 'none';
      add(['service'], `unknown service "${doc.service}" (services in this file: ${known})`);
    } else if (service !== undefined) {
      if (!service.operations.has(doc.operation)) {
        const known = [...service.operations.keys()].join(', ');
        add(['operation'], `unknown operation "${doc.operation}" of service "${doc.service}" (${known})`);
      }
      if (service.tenantSecrets === 'required' && doc.tenant === undefined)
        add(['tenant'], `required: service "${doc.service}" has tenantSecrets: required`);
    }
    if (doc.input !== undefined) {
      for (const problem of staticJsonProblems(doc.input, []))
        add(['input', ...problem.path], problem.message);
      if (service !== undefined) {
        const bytes = Buffer.byteLength(JSON.stringify(doc.input) ?? '');
        if (bytes > service.maxInputBytes)
          add(
            ['input'],
            `${bytes} bytes, over service "${doc.service}"'s maxInputBytes (${service.maxInputBytes})`,
          );
      }
    }
    if (issues.length > before || repeat === undefined) continue;
    schedules.set(name, {
      name,
      service: doc.service,
      operation: doc.operation,
      input: doc.input,
      tenant: doc.tenant,
      repeat,
    });
  }
  return schedules;
}

const SCHEDULE_KEYS = ['cron', 'tz', 'everyMs', 'service', 'operation', 'input', 'tenant'];

function unknownKey(key: string): string {
  const suggestion = suggest(key, SCHEDULE_KEYS);
  return suggestion === undefined
    ? `unknown option (expected one of ${SCHEDULE_KEYS.join(', ')})`
    : `unknown option (did you mean ${suggestion}?)`;
}

/** undefined when `tz` is a time zone this runtime knows (the IANA database Node.js ships with). */
function checkTimeZone(tz: string): string | undefined {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return undefined;
  } catch {
    return `"${tz}" is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)`;
  }
}

/**
 * undefined when BullMQ's own parser (cron-parser, through getNextMillis: the very function its schedulers use)
 * accepts `cron` and finds a next run. Five fields, or six with seconds first.
 */
function checkCron(cron: string, tz: string | undefined, now: number): string | undefined {
  if (cron.includes('{{') || cron.includes('}}'))
    return 'must be a cron expression (templates are not supported)';
  const fields = cron.trim().split(/\s+/);
  if (cron.trim() === '' || fields.length < 5 || fields.length > 6)
    return 'must be a cron expression of 5 fields (minute hour day month weekday) or 6 (seconds first)';
  let next: number | undefined;
  try {
    next = getNextMillis(now, { pattern: cron.trim(), ...(tz === undefined ? {} : { tz }) });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return `not a valid cron expression (${reason})`;
  }
  if (next === undefined || !Number.isFinite(next)) return 'never fires (no next run time)';
  return undefined;
}

/** Where `value` is not plain JSON, or holds a `{{ … }}` template (a run has no job, input or secrets to read). */
function staticJsonProblems(value: unknown, path: PropertyKey[]): ScheduleIssue[] {
  if (typeof value === 'string') {
    return value.includes('{{')
      ? [
          {
            path,
            message:
              "templates are not supported in a schedule's input: it is static JSON, sent as written in every run",
          },
        ]
      : [];
  }
  if (typeof value === 'number')
    return Number.isFinite(value) ? [] : [{ path, message: 'must be a finite number' }];
  if (value === null || typeof value === 'boolean') return [];
  if (Array.isArray(value)) return value.flatMap((item, i) => staticJsonProblems(item, [...path, i]));
  if (typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) =>
      staticJsonProblems(item, [...path, key]),
    );
  }
  return [{ path, message: 'must be JSON (a string, number, boolean, null, list or mapping)' }];
}
