import { MessageRejectedError } from '../errors';
import { SeqQueue } from './seq-queue';
import { Listeners } from '../listeners';

/** A telemetry message as accepted from the application, stamped and ready to send. */
export interface OutboxMessage {
  /** Capture order, strictly increasing. */
  seq: number;
  messageId: string;
  /** JSON text. */
  body: string;
  /** Plug and Play component (sent as `$.sub`). */
  component?: string;
  /** Application properties, including `iothub-creation-time-utc` stamped at capture. */
  properties: Record<string, string>;
  /** Epoch ms of capture. */
  createdAt: number;
  bytes: number;
}

export type NewOutboxMessage = Omit<OutboxMessage, 'seq'>;

/**
 * The stored form of a new message, built field by field: in V8, `{ ...message, seq }` (a spread
 * followed by a new key) leaves the fast clone path and costs about 1 µs a message. An absent
 * component stays absent.
 */
export function storedMessage(message: NewOutboxMessage, seq: number): OutboxMessage {
  const { messageId, body, component, properties, createdAt, bytes } = message;
  return component === undefined
    ? { seq, messageId, body, properties, createdAt, bytes }
    : { seq, messageId, body, component, properties, createdAt, bytes };
}

export interface OutboxLimits {
  maxCount: number;
  maxBytes: number;
  /** When full: refuse the new message, or drop the oldest to make room. */
  whenFull: 'reject-new' | 'drop-oldest';
}

export const DEFAULT_OUTBOX_LIMITS: OutboxLimits = {
  maxCount: 100_000,
  maxBytes: 64 * 1024 * 1024,
  whenFull: 'reject-new',
};

export interface DroppedMessage {
  messageId: string;
  /**
   * `outbox-full`: pushed out by `drop-oldest`; `expired`: older than the outbox's maximum age;
   * `stopped`: still unsent when the device stopped, in an outbox that does not outlive it (memory);
   * `unsendable`: it can never be published (it breaks a limit of IoT Hub or MQTT, it cannot be
   * read, or publishing it failed for a reason that is not the connection, several times): a
   * message stored by another version or by hand, since `sendTelemetry` refuses such messages.
   */
  reason: 'outbox-full' | 'expired' | 'stopped' | 'unsendable';
  /** Why, for `unsendable`. */
  detail?: string;
}

/**
 * Where telemetry waits for the hub's acknowledgement. A message leaves only through `remove`
 * (on PUBACK) or, with `drop-oldest`, through an explicit `dropped` notification.
 */
export interface Outbox {
  /** Accept a message (durably, for a durable outbox) or throw MessageRejectedError. */
  add(message: NewOutboxMessage): OutboxMessage;
  /**
   * Optional: `add`, grouped with the other messages added in the same event-loop turn (one
   * transaction for a durable outbox, instead of one commit per message). Resolves once the
   * message is stored (committed), rejects with what `add` would throw. Without it the caller
   * uses `add`.
   */
  addBatched?(message: NewOutboxMessage): Promise<OutboxMessage>;
  /** Up to `limit` messages with seq > `afterSeq`, in capture order. */
  after(afterSeq: number, limit: number): OutboxMessage[];
  remove(messageId: string): boolean;
  /**
   * Optional: remove several acknowledged messages at once (one transaction for a durable
   * outbox, instead of one commit per PUBACK). Returns the ids that were still there, in order.
   * Without it the sender calls `remove` for each.
   */
  removeMany?(messageIds: readonly string[]): string[];
  /**
   * Remove a message that will never be sent and tell the `dropped` listeners (nothing leaves
   * silently). Returns false if it was not there (nothing is reported then).
   */
  drop(messageId: string, reason: DroppedMessage['reason'], detail?: string): boolean;
  stats(): { count: number; bytes: number };
  /** Called after every accepted message (wakes the sender). Returns an unsubscribe function. */
  onAdded(listener: () => void): () => void;
  onDropped(listener: (dropped: DroppedMessage) => void): () => void;
  close(): void;
}

/** The listeners every outbox keeps: woken on each accepted message, told of each drop. */
export class OutboxSignals {
  private readonly addedListeners = new Listeners();
  private readonly droppedListeners = new Listeners<[DroppedMessage]>();

  onAdded(listener: () => void): () => void {
    return this.addedListeners.add(listener);
  }

  onDropped(listener: (dropped: DroppedMessage) => void): () => void {
    return this.droppedListeners.add(listener);
  }

  added(): void {
    this.addedListeners.emit();
  }

  dropped(dropped: DroppedMessage): void {
    this.droppedListeners.emit(dropped);
  }

  clear(): void {
    this.addedListeners.clear();
    this.droppedListeners.clear();
  }
}

/** The outbox for tests and devices without storage: same contract, lost on process exit. */
export class MemoryOutbox implements Outbox {
  /** The live messages, in capture order. */
  private readonly messages = new SeqQueue();
  private nextSeq = 1;
  private readonly signals = new OutboxSignals();

  constructor(private readonly limits: OutboxLimits = DEFAULT_OUTBOX_LIMITS) {}

  add(message: NewOutboxMessage): OutboxMessage {
    this.makeRoom(message.bytes);
    const stored = storedMessage(message, this.nextSeq++);
    this.messages.push(stored);
    this.signals.added();
    return stored;
  }

  private makeRoom(incomingBytes: number): void {
    const full = () => this.messages.size + 1 > this.limits.maxCount || this.messages.bytes + incomingBytes > this.limits.maxBytes;
    if (!full()) return;
    if (this.limits.whenFull === 'reject-new' || incomingBytes > this.limits.maxBytes) {
      throw new MessageRejectedError('outbox-full', `${this.messages.size} messages, ${this.messages.bytes} bytes queued`);
    }
    while (full() && this.messages.size > 0) {
      const oldest = this.messages.oldest()!;
      this.remove(oldest.messageId);
      this.signals.dropped({ messageId: oldest.messageId, reason: 'outbox-full' });
    }
  }

  after(afterSeq: number, limit: number): OutboxMessage[] {
    return this.messages.after(afterSeq, limit);
  }

  remove(messageId: string): boolean {
    return this.messages.remove(messageId) !== undefined;
  }

  drop(messageId: string, reason: DroppedMessage['reason'], detail?: string): boolean {
    if (!this.remove(messageId)) return false;
    this.signals.dropped(detail === undefined ? { messageId, reason } : { messageId, reason, detail });
    return true;
  }

  stats(): { count: number; bytes: number } {
    return { count: this.messages.size, bytes: this.messages.bytes };
  }

  /** Empties the outbox, telling the `dropped` listeners of each message (capture order). Returns how many. */
  dropAll(reason: DroppedMessage['reason']): number {
    const all = this.after(0, this.messages.size);
    for (const message of all) {
      this.remove(message.messageId);
      this.signals.dropped({ messageId: message.messageId, reason });
    }
    return all.length;
  }

  onAdded(listener: () => void): () => void {
    return this.signals.onAdded(listener);
  }

  onDropped(listener: (dropped: DroppedMessage) => void): () => void {
    return this.signals.onDropped(listener);
  }

  close(): void {
    this.signals.clear();
  }
}
