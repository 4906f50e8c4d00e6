/**
 * Live outbox messages in capture (seq) order: the in-memory outbox's store and the SQLite
 * outbox's read-ahead copy of its newest rows. Removal is by id at any position: the id leaves
 * the map at once and the array entry is passed over later (`head` moves past removed entries;
 * the array is sliced once most of it is dead). A Map used as a FIFO would do the same job, but
 * its iteration walks over every deleted entry until the table is rebuilt: O(n) per `after`.
 */
import type { OutboxMessage } from './outbox';

/** Dead entries at the front that are tolerated before the array is sliced (and only when they are most of it). */
const COMPACT_AFTER = 1024;

export class SeqQueue {
  private readonly live = new Map<string, OutboxMessage>();
  /** Seq ascending from `head` on; may still hold removed messages until `head` passes them. */
  private queue: OutboxMessage[] = [];
  private head = 0;
  private liveBytes = 0;

  get size(): number {
    return this.live.size;
  }

  get bytes(): number {
    return this.liveBytes;
  }

  get(messageId: string): OutboxMessage | undefined {
    return this.live.get(messageId);
  }

  /** Appends a message whose seq is above every other's. */
  push(message: OutboxMessage): void {
    this.live.set(message.messageId, message);
    this.queue.push(message);
    this.liveBytes += message.bytes;
  }

  /** The live message with the lowest seq. */
  oldest(): OutboxMessage | undefined {
    return this.live.size === 0 ? undefined : this.queue[this.head];
  }

  /** Removes a live message; undefined when it is not here. */
  remove(messageId: string): OutboxMessage | undefined {
    const message = this.live.get(messageId);
    if (!message) return undefined;
    this.live.delete(messageId);
    this.liveBytes -= message.bytes;
    while (this.head < this.queue.length && !this.isLive(this.queue[this.head]!)) this.head++;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > COMPACT_AFTER && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return message;
  }

  clear(): void {
    this.live.clear();
    this.queue = [];
    this.head = 0;
    this.liveBytes = 0;
  }

  /** Up to `limit` live messages with seq > `afterSeq`, in seq order. */
  after(afterSeq: number, limit: number): OutboxMessage[] {
    const result: OutboxMessage[] = [];
    for (let i = this.firstAfter(afterSeq); i < this.queue.length && result.length < limit; i++) {
      const message = this.queue[i]!;
      if (this.isLive(message)) result.push(message);
    }
    return result;
  }

  /** How many live messages have a seq in [first, last]. */
  liveInRange(first: number, last: number): number {
    let count = 0;
    for (let i = this.firstAfter(first - 1); i < this.queue.length && this.queue[i]!.seq <= last; i++) {
      if (this.isLive(this.queue[i]!)) count++;
    }
    return count;
  }

  private isLive(message: OutboxMessage): boolean {
    return this.live.get(message.messageId) === message;
  }

  /** The array index of the first message with seq > `afterSeq` (binary search: the array is in seq order). */
  private firstAfter(afterSeq: number): number {
    let lo = this.head;
    let hi = this.queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.queue[mid]!.seq <= afterSeq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
