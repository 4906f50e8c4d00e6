/**
 * A fixed-capacity buffer that keeps the newest items: the live page's history (transitions,
 * samples, fault marks) must not grow with the demo's uptime (`--ui` runs until Ctrl-C).
 */
export class RingBuffer<T> {
  private readonly items: Array<T | undefined>;
  /** Index the next push writes to. */
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** Adds an item, overwriting the oldest once full. */
  push(item: T): void {
    this.items[this.next] = item;
    this.next = (this.next + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }

  /** Oldest first. */
  toArray(): T[] {
    const start = (this.next - this.count + this.capacity) % this.capacity;
    return Array.from({ length: this.count }, (_, i) => this.items[(start + i) % this.capacity] as T);
  }
}
