/**
 * A list of listeners that costs nothing until the first one: the array is replaced on add and
 * remove (rare) instead of mutated, so `emit` (on every message, for the outbox) iterates without
 * copying and a listener removed or added during an emit does not disturb it. Replaces a `Set`
 * per list: an empty Set holds its own hash table (~150 bytes), and a device had a handful.
 */
type Listener<A extends unknown[]> = (...args: A) => void;

const NONE: readonly never[] = Object.freeze([]);

export class Listeners<A extends unknown[] = []> {
  #list: ReadonlyArray<Listener<A>> = NONE;

  /** Adds a listener (once: adding it again changes nothing); returns its removal. */
  add(listener: Listener<A>): () => void {
    if (!this.#list.includes(listener)) this.#list = [...this.#list, listener];
    return () => this.remove(listener);
  }

  remove(listener: Listener<A>): void {
    if (this.#list.includes(listener)) this.#list = this.#list.filter((l) => l !== listener);
  }

  emit(...args: A): void {
    for (const listener of this.#list) listener(...args);
  }

  clear(): void {
    this.#list = NONE;
  }

  get size(): number {
    return this.#list.length;
  }
}
