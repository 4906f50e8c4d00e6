/**
 * A StatsCollector driven as the device drives it: state by state (`go`, `lose`) and by the
 * outbox's callbacks, on a simulated clock starting at T0. Shared by the stats and metrics tests.
 */
import { SimulatedClock } from 'xstate';
import type { DeviceStateName } from '../../src/device';
import type { ErrorClass, Failure } from '../../src/policy/types';
import { StatsCollector } from '../../src/stats';
import { MemoryOutbox } from '../../src/store/outbox';

export const T0 = Date.UTC(2026, 0, 1);

export function failure(errorClass: ErrorClass, rule: string, at: number): Failure {
  return { errorClass, rule, phase: 'hub-session', name: 'Error', message: `${rule} happened`, at };
}

/** An outbox message as sendTelemetry builds it. */
export function message(id: string, createdAt: number, bytes = 10) {
  return { messageId: id, body: '{}', properties: {}, createdAt, bytes };
}

export function statsDriver() {
  const clock = new SimulatedClock();
  clock.set(T0);
  const outbox = new MemoryOutbox();
  const stats = new StatsCollector(clock, outbox);
  outbox.onAdded(() => stats.added());
  outbox.onDropped((dropped) => stats.dropped(dropped));
  let state: DeviceStateName = 'Idle';
  let lastError: Failure | null = null;
  const go = (value: DeviceStateName, hubHost: string | null = 'hub-a', event = 'xstate.done.actor') => {
    stats.transition({ value, previous: state, event, hubHost, lastError });
    state = value;
  };
  const lose = (errorClass: ErrorClass, rule: string, next: DeviceStateName = 'BackingOff') => {
    lastError = failure(errorClass, rule, clock.now());
    stats.transition({ value: next, previous: state, event: 'HUB_LOST', hubHost: 'hub-a', lastError });
    state = next;
  };
  return { clock, outbox, stats, go, lose, state: () => state };
}
