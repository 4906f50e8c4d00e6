/**
 * An abstract model of what the cloud can do to a connected device, for model-based end-to-end
 * tests: each event is a fault the local cloud can inject, and each fault has the leg of device
 * states it must cause. `xstate/graph` generates every sequence of two faults the model allows
 * (a failback only after a failover), and the suite replays them with the real SDK.
 */
import { assign, createMachine } from 'xstate';
import { getSimplePaths } from 'xstate/graph';

export type Fault = 'DROP' | 'CRASH' | 'FAILOVER' | 'FAILBACK' | 'USER_REPROVISION' | 'THROTTLED_REPROVISION';

/** The device states each fault must cause, from Connected back to Connected (as a pattern). */
export const EXPECTED_LEG: Record<Fault, RegExp> = {
  // socket dropped by the hub: one short retry on the same hub
  DROP: /^Connected BackingOff Connecting Connected$/,
  // hub process gone for a while: retries on the same hub until it is back, no DPS
  CRASH: /^Connected BackingOff (Connecting BackingOff )*Connecting Connected$/,
  // IoT Central failover: dropped, then refused (CONNACK 3 as Azure, or 5) → DPS status lookup
  // names the other hub → connect there (no registration)
  FAILOVER: /^Connected BackingOff Connecting CheckingAssignment Connecting Connected$/,
  FAILBACK: /^Connected BackingOff Connecting CheckingAssignment Connecting Connected$/,
  USER_REPROVISION: /^Connected Reprovisioning Connecting Connected$/,
  // DPS answers 429 once: the device waits retry-after (+ jitter) and registers again
  THROTTLED_REPROVISION: /^Connected Reprovisioning BackingOff Reprovisioning Connecting Connected$/,
};

export const faultModel = createMachine({
  types: {} as { context: { failedOver: boolean; faults: number }; events: { type: Fault } },
  id: 'faults',
  context: { failedOver: false, faults: 0 },
  initial: 'Connected',
  states: {
    Connected: {
      always: { guard: ({ context }) => context.faults >= 2, target: 'Done' },
      on: {
        DROP: { actions: assign({ faults: ({ context }) => context.faults + 1 }) },
        CRASH: { actions: assign({ faults: ({ context }) => context.faults + 1 }) },
        USER_REPROVISION: { actions: assign({ faults: ({ context }) => context.faults + 1 }) },
        THROTTLED_REPROVISION: { actions: assign({ faults: ({ context }) => context.faults + 1 }) },
        FAILOVER: {
          guard: ({ context }) => !context.failedOver,
          actions: assign({ failedOver: true, faults: ({ context }) => context.faults + 1 }),
        },
        FAILBACK: {
          guard: ({ context }) => context.failedOver,
          actions: assign({ failedOver: false, faults: ({ context }) => context.faults + 1 }),
        },
      },
    },
    Done: { type: 'final' },
  },
});

const ALL_FAULTS: Fault[] = ['DROP', 'CRASH', 'FAILOVER', 'FAILBACK', 'USER_REPROVISION', 'THROTTLED_REPROVISION'];

/** Every sequence of two faults the model allows. */
export function generateFaultSequences(): Fault[][] {
  const paths = getSimplePaths(faultModel, {
    events: ALL_FAULTS.map((type) => ({ type })),
    serializeState: (snapshot) => `${String(snapshot.value)}|${snapshot.context.failedOver}|${snapshot.context.faults}`,
  });
  return paths
    .filter((path) => path.state.value === 'Done')
    .map((path) => path.steps.map((step) => step.event.type).filter((type): type is Fault => ALL_FAULTS.includes(type as Fault)));
}
