/**
 * The one delivery check of hubstate's tests and of the toolkit: which accepted message ids
 * reached a hub of the local cloud, and how many arrived more than once (at-least-once delivery
 * allows duplicates: they are counted, not hidden).
 */
import type { LocalCloud } from 'hubstate-cloud';

export interface DeliveryReport {
  /** Accepted ids that reached no hub (in the order given). */
  lost: string[];
  /** Extra arrivals of the given ids (an id that arrived three times counts 2). */
  duplicates: number;
}

/** Every accepted id checked against the cloud's telemetry; `deviceId` narrows it to one device's. */
export function deliveryReport(cloud: LocalCloud, ids: readonly string[], options: { deviceId?: string } = {}): DeliveryReport {
  const arrivals = new Map<string, number>();
  for (const record of cloud.telemetry(options.deviceId === undefined ? {} : { deviceId: options.deviceId })) {
    if (record.messageId) arrivals.set(record.messageId, (arrivals.get(record.messageId) ?? 0) + 1);
  }
  const lost = ids.filter((id) => !arrivals.has(id));
  const duplicates = ids.reduce((n, id) => n + Math.max(0, (arrivals.get(id) ?? 0) - 1), 0);
  return { lost, duplicates };
}
