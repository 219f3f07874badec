import { describe, expect, it } from 'vitest';

import { SafeEmitter } from '../../src/worker/safe-emitter.ts';

interface Events {
  tick: number;
  tock: string;
}

function emitter(): { events: SafeEmitter<Events>; errors: [keyof Events, unknown][] } {
  const errors: [keyof Events, unknown][] = [];
  return { events: new SafeEmitter<Events>((event, error) => errors.push([event, error])), errors };
}

describe('SafeEmitter', () => {
  it('calls every listener of the event in the order they were added, with the payload', () => {
    const { events } = emitter();
    const seen: string[] = [];
    events.on('tick', (n) => seen.push(`a${n}`));
    events.on('tock', (s) => seen.push(`t${s}`));
    events.on('tick', (n) => seen.push(`b${n}`));
    events.emit('tick', 1);
    events.emit('tock', 'x');
    expect(seen).toEqual(['a1', 'b1', 'tx']);
  });

  it('hands what a listener throws to its error handler and still calls the others', () => {
    const { events, errors } = emitter();
    const seen: number[] = [];
    const bug = new Error('listener bug');
    events.on('tick', () => {
      throw bug;
    });
    events.on('tick', (n) => seen.push(n));
    expect(() => events.emit('tick', 7)).not.toThrow();
    expect(seen).toEqual([7]);
    expect(errors).toEqual([['tick', bug]]);
  });

  it('off removes one registration, the first, and leaves the list an emit is walking alone', () => {
    const { events } = emitter();
    const seen: string[] = [];
    const twice = (): void => void seen.push('twice');
    const other = (): void => void seen.push('other');
    const removesOther = (): void => {
      seen.push('removes');
      events.off('tick', other);
    };
    events.on('tick', twice);
    events.on('tick', removesOther);
    events.on('tick', other);
    events.on('tick', twice);
    events.emit('tick', 1);
    expect(seen).toEqual(['twice', 'removes', 'other', 'twice']);
    seen.length = 0;
    events.off('tick', twice);
    events.off('tick', removesOther);
    events.off('tock', twice);
    events.emit('tick', 2);
    expect(seen).toEqual(['twice']);
    events.off('tick', twice);
    events.emit('tick', 3);
    expect(seen).toEqual(['twice']);
  });
});
