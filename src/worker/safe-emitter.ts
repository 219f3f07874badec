/**
 * A typed event emitter whose listeners can never throw into the code that emits. The worker pool's delivery
 * events are emitted from the middle of a delivery: a throw from a listener would be taken for a failure to
 * record the job's outcome, and the job would run again.
 *
 * Not node:events' EventEmitter: its emit() stops at the first listener that throws and rethrows to the
 * emitter, so each listener would need a wrapper (and off() a map back to it); it copies the listener list on
 * every emit and every listeners() call (metrics listen to every completed job); and an event named `error`
 * means something else to it.
 */
export class SafeEmitter<Events extends object> {
  // Replaced, never mutated, on on/off: emit walks the current list without copying it.
  readonly #listeners = new Map<keyof Events, readonly ((payload: never) => void)[]>();
  readonly #onListenerError: (event: keyof Events, error: unknown) => void;

  /** `onListenerError` hears what a listener threw (after which the remaining listeners still run). */
  constructor(onListenerError: (event: keyof Events, error: unknown) => void) {
    this.#onListenerError = onListenerError;
  }

  /** Calls every listener of `event` in the order they were added; what one throws goes to onListenerError. */
  emit<E extends keyof Events>(event: E, payload: Events[E]): void {
    const list = this.#listeners.get(event);
    if (list === undefined) return;
    for (const listener of list) {
      try {
        (listener as (payload: Events[E]) => void)(payload);
      } catch (error) {
        this.#onListenerError(event, error);
      }
    }
  }

  on<E extends keyof Events>(event: E, listener: (payload: Events[E]) => void): void {
    this.#listeners.set(event, [...(this.#listeners.get(event) ?? []), listener]);
  }

  /** Removes one registration of `listener`: the first one added. */
  off<E extends keyof Events>(event: E, listener: (payload: Events[E]) => void): void {
    const list = this.#listeners.get(event) ?? [];
    const index = list.indexOf(listener);
    if (index < 0) return;
    const rest = [...list.slice(0, index), ...list.slice(index + 1)];
    if (rest.length === 0) this.#listeners.delete(event);
    else this.#listeners.set(event, rest);
  }
}
