import { describe, expect, it } from 'vitest';

import {
  type BreakerInput,
  type BreakerState,
  closedState,
  isSameState,
  nextState,
  remainingOpenMs,
  sourceOf,
  type TransitionSource,
} from '../../src/breakers/state.ts';

const closed: BreakerState = { state: 'closed' };
const halfOpen: BreakerState = { state: 'halfOpen' };
const open = (untilMs: number): BreakerState => ({ state: 'open', untilMs });

const NOW = 10_000;
const RESET = 30_000;

describe('nextState', () => {
  it.each<[string, BreakerState, BreakerInput, BreakerState]>([
    // The local detector trips: only a closed breaker opens, for resetTimeoutMs.
    [
      'closed trips → open for resetTimeoutMs',
      closed,
      { type: 'tripped', nowMs: NOW, resetTimeoutMs: RESET },
      open(NOW + RESET),
    ],
    [
      'open does not re-trip (no second open period)',
      open(NOW + 5),
      { type: 'tripped', nowMs: NOW, resetTimeoutMs: RESET },
      open(NOW + 5),
    ],
    [
      'half-open does not trip (the probe decides)',
      halfOpen,
      { type: 'tripped', nowMs: NOW, resetTimeoutMs: RESET },
      halfOpen,
    ],

    // Time passes.
    ['open before untilMs stays open', open(NOW + 1), { type: 'elapsed', nowMs: NOW }, open(NOW + 1)],
    ['open at untilMs → half-open', open(NOW), { type: 'elapsed', nowMs: NOW }, halfOpen],
    ['open after untilMs → half-open', open(NOW - 1), { type: 'elapsed', nowMs: NOW }, halfOpen],
    ['closed stays closed as time passes', closed, { type: 'elapsed', nowMs: NOW }, closed],
    ['half-open stays half-open as time passes', halfOpen, { type: 'elapsed', nowMs: NOW }, halfOpen],

    // The probe this process ran.
    ['probe success → closed', halfOpen, { type: 'probeSucceeded' }, closed],
    [
      'probe success after someone else decided changes nothing',
      open(NOW + 9),
      { type: 'probeSucceeded' },
      open(NOW + 9),
    ],
    [
      'probe failure → open for another resetTimeoutMs',
      halfOpen,
      { type: 'probeFailed', nowMs: NOW, resetTimeoutMs: RESET },
      open(NOW + RESET),
    ],
    [
      'probe failure after a close elsewhere changes nothing',
      closed,
      { type: 'probeFailed', nowMs: NOW, resetTimeoutMs: RESET },
      closed,
    ],

    // Learned from Redis.
    ['closed sees an open record → open with the same untilMs', closed, shared(NOW + 700), open(NOW + 700)],
    ['open adopts a different untilMs', open(NOW + 100), shared(NOW + 700), open(NOW + 700)],
    ['closed sees an expired open record → half-open', closed, shared(NOW - 1), halfOpen],
    ['open sees its record run out → half-open', open(NOW + 100), shared(NOW), halfOpen],
    [
      'half-open sees a re-open (a probe failed elsewhere) → open',
      halfOpen,
      shared(NOW + 700),
      open(NOW + 700),
    ],
    ['half-open sees the same run-out record → half-open', halfOpen, shared(NOW - 50), halfOpen],
    ['open sees no key (closed elsewhere) → closed', open(NOW + 100), shared(null), closed],
    ['half-open sees no key (probe succeeded elsewhere) → closed', halfOpen, shared(null), closed],
    ['closed sees no key → closed', closed, shared(null), closed],

    // Manual commands.
    ['manual open from closed', closed, { type: 'manualOpened', untilMs: NOW + 60_000 }, open(NOW + 60_000)],
    [
      'manual open replaces a shorter open',
      open(NOW + 5),
      { type: 'manualOpened', untilMs: NOW + 60_000 },
      open(NOW + 60_000),
    ],
    [
      'manual open replaces a longer open too',
      open(NOW + 90_000),
      { type: 'manualOpened', untilMs: NOW + 60_000 },
      open(NOW + 60_000),
    ],
    [
      'manual open from half-open',
      halfOpen,
      { type: 'manualOpened', untilMs: NOW + 60_000 },
      open(NOW + 60_000),
    ],
    ['manual close from open', open(NOW + 5), { type: 'manualClosed' }, closed],
    ['manual close from half-open', halfOpen, { type: 'manualClosed' }, closed],
    ['manual close when closed', closed, { type: 'manualClosed' }, closed],
  ])('%s', (_title, from, input, expected) => {
    expect(nextState(from, input)).toEqual(expected);
  });

  it.each<[BreakerState, BreakerInput]>([
    [closedState, { type: 'elapsed', nowMs: NOW }],
    [closedState, shared(null)],
    [open(NOW + 5), { type: 'tripped', nowMs: NOW, resetTimeoutMs: RESET }],
    [open(NOW + 5), shared(NOW + 5)],
    [open(NOW + 5), { type: 'manualOpened', untilMs: NOW + 5 }],
  ])('returns the same object when nothing changes (%o, %o)', (from, input) => {
    expect(nextState(from, input)).toBe(from);
  });

  it('returns frozen states', () => {
    const next = nextState(closed, { type: 'tripped', nowMs: NOW, resetTimeoutMs: RESET });
    expect(Object.isFrozen(next)).toBe(true);
    expect(Object.isFrozen(nextState(halfOpen, { type: 'probeSucceeded' }))).toBe(true);
  });
});

describe('sourceOf', () => {
  it.each<[BreakerInput['type'], TransitionSource]>([
    ['tripped', 'local'],
    ['elapsed', 'local'],
    ['probeSucceeded', 'local'],
    ['probeFailed', 'local'],
    ['sharedObserved', 'shared'],
    ['manualOpened', 'manual'],
    ['manualClosed', 'manual'],
  ])('%s → %s', (type, source) => {
    expect(sourceOf({ type } as BreakerInput)).toBe(source);
  });
});

describe('isSameState', () => {
  it.each<[BreakerState, BreakerState, boolean]>([
    [closed, { state: 'closed' }, true],
    [halfOpen, { state: 'halfOpen' }, true],
    [open(5), open(5), true],
    [open(5), open(6), false],
    [open(5), halfOpen, false],
    [closed, halfOpen, false],
  ])('%o vs %o → %s', (a, b, same) => {
    expect(isSameState(a, b)).toBe(same);
  });
});

describe('remainingOpenMs', () => {
  it.each<[number, number, number]>([
    [NOW + 1500, NOW, 1500],
    [NOW + 0.2, NOW, 1],
    [NOW, NOW, 1],
    [NOW - 100, NOW, 1],
  ])('open until %d at %d → %d ms', (untilMs, nowMs, expected) => {
    expect(remainingOpenMs({ untilMs }, nowMs)).toBe(expected);
  });
});

function shared(untilMs: number | null): BreakerInput {
  return {
    type: 'sharedObserved',
    nowMs: NOW,
    record: untilMs === null ? null : { untilMs, openedAtMs: NOW - RESET },
  };
}
