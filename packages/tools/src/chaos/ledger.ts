/**
 * The soak's delivery accounting, bounded: only messages in flight are remembered. A message is
 * final when its device reports it `delivered` (PUBACK): the hub stores before it acknowledges, so
 * its arrival count cannot change after that (a resend needs the message still in the outbox).
 * With the cloud in another process its `telemetry` events travel separately from the PUBACK, so
 * a delivered id waits for the next sync with the cloud (every event emitted before the sync has
 * then arrived) before it is finalized.
 */
import type { DroppedMessage } from 'hubstate';

interface InFlight {
  /** When the device accepted it. */
  at: number;
  /** How many times the cloud stored it so far. */
  arrivals: number;
}

const SAMPLES = 10;

export interface TelemetryFigures {
  accepted: number;
  arrivedDistinct: number;
  acknowledged: number;
  arrivedUnacknowledged: number;
  lost: number;
  lostSamples: string[];
  duplicates: number;
  unknownArrivals: number;
  rejected: Record<string, number>;
  dropped: number;
  droppedReasons: Record<string, number>;
  droppedSamples: string[];
  stillQueued: number;
}

export class DeliveryLedger {
  /** Accepted, not yet acknowledged. */
  private readonly pending = new Map<string, InFlight>();
  /** Stored by the cloud before (or without) the device's acceptance being recorded. */
  private readonly orphanArrivals = new Map<string, number>();
  private deliveredUnsynced: string[] = [];
  private syncing: Promise<void> | undefined;
  private settled: { arrivedUnacknowledged: number; unknownArrivals: number } | undefined;

  private acceptedCount = 0;
  private arrivedDistinct = 0;
  private finalized = 0;
  private duplicates = 0;
  private lost = 0;
  private readonly lostSamples: string[] = [];
  private dropped = 0;
  private readonly droppedReasons: Record<string, number> = {};
  private readonly droppedSamples: string[] = [];
  private readonly rejectReasons: Record<string, number> = {};

  /** A device accepted the message (`sendTelemetry` resolved). */
  accept(id: string): void {
    this.acceptedCount++;
    const early = this.orphanArrivals.get(id) ?? 0;
    this.orphanArrivals.delete(id);
    if (early > 0) this.arrivedDistinct++;
    this.pending.set(id, { at: Date.now(), arrivals: early });
  }

  /** The cloud stored the message (once per store: a resend arrives again). */
  arrive(id: string): void {
    const p = this.pending.get(id);
    if (p) {
      if (p.arrivals === 0) this.arrivedDistinct++;
      p.arrivals++;
    } else this.orphanArrivals.set(id, (this.orphanArrivals.get(id) ?? 0) + 1);
  }

  /** The device got the PUBACK: final at the next sync. */
  delivered(id: string): void {
    this.deliveredUnsynced.push(id);
  }

  reject(reason: string): void {
    this.rejectReasons[reason] = (this.rejectReasons[reason] ?? 0) + 1;
  }

  drop(message: DroppedMessage, describe: (reason: string, detail: string | undefined) => string): void {
    this.dropped++;
    const reason = message.reason;
    this.droppedReasons[reason] = (this.droppedReasons[reason] ?? 0) + 1;
    if (this.droppedSamples.length < SAMPLES) this.droppedSamples.push(describe(reason, message.detail));
  }

  /** Finalizes every delivery reported before the cloud answers `sync` (one sync at a time). */
  sync(cloudSync: (() => Promise<unknown>) | undefined): Promise<void> {
    if (this.syncing || !cloudSync) return this.syncing ?? Promise.resolve();
    const batch = this.deliveredUnsynced;
    this.deliveredUnsynced = [];
    this.syncing = cloudSync().then(
      () => {
        for (const id of batch) this.finalize(id);
        this.syncing = undefined;
      },
      (error: unknown) => {
        this.deliveredUnsynced = batch.concat(this.deliveredUnsynced);
        this.syncing = undefined;
        throw error;
      },
    );
    return this.syncing;
  }

  /** The sync under way, if any, with its failure left to the next one. */
  async syncInProgress(): Promise<void> {
    await this.syncing?.catch(() => undefined);
  }

  get accepted(): number {
    return this.acceptedCount;
  }

  get acknowledged(): number {
    return this.acceptedCount - this.pending.size;
  }

  /** Some accepted message has waited longer than `ageMs` for its PUBACK (a stalled session). */
  hasWaitingLongerThan(ageMs: number, now = Date.now()): boolean {
    for (const p of this.pending.values()) if (now - p.at > ageMs) return true;
    return false;
  }

  everyPendingArrived(): boolean {
    for (const p of this.pending.values()) if (p.arrivals === 0) return false;
    return true;
  }

  private finalize(id: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    this.finalized++;
    if (p.arrivals === 0) {
      this.lost++; // acknowledged but never stored: the cloud lost it
      if (this.lostSamples.length < SAMPLES) this.lostSamples.push(`${id} (acknowledged, never stored)`);
    } else this.duplicates += p.arrivals - 1;
  }

  /**
   * At the end, messages never acknowledged: stored at least once counts as arrived, never stored
   * is lost. Once; later calls return the first tally.
   */
  settle(): { arrivedUnacknowledged: number; unknownArrivals: number } {
    if (this.settled) return this.settled;
    let arrivedUnacknowledged = 0;
    for (const [id, p] of this.pending) {
      if (p.arrivals === 0) {
        this.lost++;
        if (this.lostSamples.length < SAMPLES) this.lostSamples.push(id);
      } else {
        arrivedUnacknowledged++;
        this.duplicates += p.arrivals - 1;
      }
    }
    const unknownArrivals = [...this.orphanArrivals.values()].reduce((a, b) => a + b, 0);
    this.settled = { arrivedUnacknowledged, unknownArrivals };
    return this.settled;
  }

  figures(stillQueued: number): TelemetryFigures {
    const { arrivedUnacknowledged, unknownArrivals } = this.settle();
    return {
      accepted: this.acceptedCount,
      arrivedDistinct: this.arrivedDistinct,
      acknowledged: this.finalized,
      arrivedUnacknowledged,
      lost: this.lost,
      lostSamples: this.lostSamples,
      duplicates: this.duplicates,
      unknownArrivals,
      rejected: this.rejectReasons,
      dropped: this.dropped,
      droppedReasons: this.droppedReasons,
      droppedSamples: this.droppedSamples,
      stillQueued,
    };
  }
}
