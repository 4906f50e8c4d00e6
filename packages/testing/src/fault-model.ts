/**
 * An abstract model of what the cloud can do to a connected device, for model-based end-to-end
 * tests: each event is a fault the local cloud can inject, and each fault has the leg of device
 * states it must cause. `xstate/graph` generates every path the model allows, and the runner
 * (failover-paths.ts) replays them with the real SDK against the local cloud:
 *
 * - short faults (a dropped socket, a crash, failover and failback, reprovisions): every sequence
 *   of `depth` faults (two by default; a failback only after a failover);
 * - long faults (a flapping hub, a long DPS outage with and without a need for DPS, a disabled
 *   device): seconds of compressed backoff each (minutes with the default policy, unless the
 *   runner's clock is simulated), so each is a path of its own (generateFailoverPaths with
 *   `longFaults: true`; the runner's checks of them are in long-faults.ts).
 *
 * A path with a hub refusal in it (failover, failback, a disabled device) is replayed under both
 * CONNACK codes a hub may refuse with (3 as Azure, 5 the other reading of the evidence).
 */
import { assign, setup, type AnyStateNode, type AnyTransitionDefinition } from 'xstate';
import { getSimplePaths } from 'xstate/graph';

export type ShortFault = 'DROP' | 'CRASH' | 'FAILOVER' | 'FAILBACK' | 'USER_REPROVISION' | 'THROTTLED_REPROVISION';
export type LongFault = 'FLAPPING_HUB' | 'DPS_OUTAGE' | 'DPS_OUTAGE_REPROVISION' | 'DISABLED_DEVICE';
export type Fault = ShortFault | LongFault;
export type RefusalCode = 3 | 5;

export const SHORT_FAULTS: readonly ShortFault[] = ['DROP', 'CRASH', 'FAILOVER', 'FAILBACK', 'USER_REPROVISION', 'THROTTLED_REPROVISION'];
export const LONG_FAULTS: readonly LongFault[] = ['FLAPPING_HUB', 'DPS_OUTAGE', 'DPS_OUTAGE_REPROVISION', 'DISABLED_DEVICE'];
const ALL_FAULTS: readonly Fault[] = [...SHORT_FAULTS, ...LONG_FAULTS];
/** Faults in which a hub refuses the device's CONNECT (moved or disabled): their paths run under both codes. */
export const REFUSING_FAULTS: readonly Fault[] = ['FAILOVER', 'FAILBACK', 'DISABLED_DEVICE'];

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
  // the hub accepts and drops the device within a moment, again and again: each short session is
  // a failed attempt (a reconnect the drop beats is one too), so the retries back off on the
  // curve, on the same hub, no DPS; the first session that lasts ends it
  FLAPPING_HUB: /^Connected BackingOff Connecting (?:(?:Connected )?BackingOff Connecting )+Connected$/,
  // DPS gone while the hub is fine: nothing to do, the device stays connected
  DPS_OUTAGE: /^Connected$/,
  // DPS gone when the device must register: back off on the curve while DPS is unreachable,
  // the 5 s floor after its 5xx, then register
  DPS_OUTAGE_REPROVISION: /^Connected Reprovisioning (?:BackingOff Reprovisioning )+Connecting Connected$/,
  // disabled on its hub: dropped, refused → one status lookup (DPS still names this hub) → back
  // off on the hub, refused again without another lookup or a registration; enabled → connected
  DISABLED_DEVICE: /^Connected BackingOff Connecting CheckingAssignment BackingOff Connecting (?:BackingOff Connecting )*Connected$/,
};

type ModelContext = { failedOver: boolean; faults: number; depth: number };

/** An application's own fault may be named like the model's: capitals, digits, underscores. */
const CUSTOM_FAULT_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;
/** Each custom fault multiplies the paths: a handful is what a test suite can run. */
export const MAX_CUSTOM_FAULTS = 8;

/**
 * The fault model, with the application's own faults (by name) added as short faults that can hit
 * a connected device at any step, as a drop or a reprovision can.
 */
export function createFaultModel(customFaults: readonly string[] = []) {
  if (customFaults.length > MAX_CUSTOM_FAULTS) throw new RangeError(`customFaults: at most ${MAX_CUSTOM_FAULTS}, got ${customFaults.length}`);
  for (const name of customFaults) {
    if (!CUSTOM_FAULT_NAME.test(name) || (ALL_FAULTS as readonly string[]).includes(name)) {
      throw new RangeError(`customFaults: '${name}' must be a new name of capitals, digits and underscores (not one of the model's faults)`);
    }
  }
  return setup({
  types: {} as { context: ModelContext; events: { type: string }; input: { depth?: number } | undefined },
  actions: {
    count: assign({ faults: ({ context }) => context.faults + 1 }),
    failOver: assign({ failedOver: true, faults: ({ context }) => context.faults + 1 }),
    failBack: assign({ failedOver: false, faults: ({ context }) => context.faults + 1 }),
    /** A long fault is the whole path. */
    endPath: assign({ faults: ({ context }) => context.depth }),
  },
  guards: {
    pathComplete: ({ context }) => context.faults >= context.depth,
    failedOver: ({ context }) => context.failedOver,
    notFailedOver: ({ context }) => !context.failedOver,
    /** A long fault hits a fresh device only: nothing before it, nothing after it. */
    firstFault: ({ context }) => context.faults === 0,
  },
}).createMachine({
  id: 'faults',
  // depth: how many short faults a path has (1–4: the paths grow as 6^depth).
  context: ({ input }) => ({ failedOver: false, faults: 0, depth: input?.depth ?? 2 }),
  initial: 'Connected',
  states: {
    Connected: {
      always: { guard: 'pathComplete', target: 'Done' },
      on: {
        DROP: { actions: 'count' },
        CRASH: { actions: 'count' },
        USER_REPROVISION: { actions: 'count' },
        THROTTLED_REPROVISION: { actions: 'count' },
        FAILOVER: { guard: 'notFailedOver', actions: 'failOver' },
        FAILBACK: { guard: 'failedOver', actions: 'failBack' },
        FLAPPING_HUB: { guard: 'firstFault', actions: 'endPath' },
        DPS_OUTAGE: { guard: 'firstFault', actions: 'endPath' },
        DPS_OUTAGE_REPROVISION: { guard: 'firstFault', actions: 'endPath' },
        DISABLED_DEVICE: { guard: 'firstFault', actions: 'endPath' },
        ...Object.fromEntries(customFaults.map((name) => [name, { actions: 'count' as const }])),
      },
    },
    Done: { type: 'final' },
  },
  });
}

export const faultModel = createFaultModel();

type SimplePath = ReturnType<typeof getSimplePaths<typeof faultModel>>[number];

/** Longest path the model generates: 6^4 = 1,296 sequences of short faults. */
export const MAX_FAULT_DEPTH = 4;

function simplePaths(depth = 2, customFaults: readonly string[] = []): SimplePath[] {
  if (!Number.isInteger(depth) || depth < 1 || depth > MAX_FAULT_DEPTH) throw new RangeError(`depth: a whole number from 1 to ${MAX_FAULT_DEPTH}, got ${depth}`);
  return getSimplePaths(customFaults.length ? createFaultModel(customFaults) : faultModel, {
    input: { depth },
    events: [...ALL_FAULTS, ...customFaults].map((type) => ({ type })),
    serializeState: (snapshot) => `${String(snapshot.value)}|${snapshot.context.failedOver}|${snapshot.context.faults}`,
  }).filter((path) => path.state.value === 'Done');
}

/** The faults of a path (the model's, or the application's own by name), without the model's internal events. */
const faultsOf = (path: SimplePath): Array<Fault | string> => path.steps.map((step) => step.event.type).filter((type) => !type.startsWith('xstate.'));

/** Every path the model allows, as its faults: all `depth`-fault sequences of short (and custom) faults, and each long fault alone. */
export function generateFaultPaths(depth?: number): Fault[][];
export function generateFaultPaths(depth: number, customFaults: readonly string[]): Array<Array<Fault | string>>;
export function generateFaultPaths(depth = 2, customFaults: readonly string[] = []): Array<Array<Fault | string>> {
  return simplePaths(depth, customFaults).map(faultsOf);
}

/** Every sequence of `depth` short (and custom) faults the model allows. */
export function generateFaultSequences(depth?: number): Fault[][];
export function generateFaultSequences(depth: number, customFaults: readonly string[]): Array<Array<Fault | string>>;
export function generateFaultSequences(depth = 2, customFaults: readonly string[] = []): Array<Array<Fault | string>> {
  return generateFaultPaths(depth, customFaults).filter((faults) => !isLongPath(faults));
}

export const isLongPath = (faults: ReadonlyArray<Fault | string>) => faults.some((f) => (LONG_FAULTS as readonly string[]).includes(f));

export interface ReplayCase {
  /** Test name: the faults, and the refusal code when the path has a refusal in it. */
  name: string;
  faults: Fault[];
  /** The CONNACK code the hubs refuse the device with on this run (paths with a refusal only). */
  refusalCode?: RefusalCode;
}

/** One run per path, two (CONNACK 3 and 5) for a path with a hub refusal in it. */
export function replayCases(paths: Fault[][]): ReplayCase[] {
  return paths.flatMap((faults) => {
    const name = faults.join(' → ');
    if (!faults.some((f) => REFUSING_FAULTS.includes(f))) return [{ name, faults }];
    return ([3, 5] as const).map((refusalCode) => ({ name: `${name} (CONNACK ${refusalCode})`, faults, refusalCode }));
  });
}

/**
 * Transitions of the fault model (each guarded branch, the eventless one included) that the
 * generated paths take, so a fault added to the model without a path cannot go unnoticed.
 */
export function faultModelCoverage(): { covered: number; total: number; missing: string[]; paths: number; line: string } {
  const items: Array<{ label: string; transition: AnyTransitionDefinition }> = [];
  for (const node of Object.values(faultModel.root.states) as AnyStateNode[]) {
    for (const [eventType, definitions] of node.transitions) {
      definitions.forEach((transition, i) => items.push({ label: `${node.key} --${eventType}#${i}--> ${transition.target?.map((t) => t.key).join(',') ?? node.key}`, transition }));
    }
    (node.always ?? []).forEach((transition, i) => items.push({ label: `${node.key} --always#${i}--> ${transition.target?.map((t) => t.key).join(',')}`, transition }));
  }
  const taken = new Set<AnyTransitionDefinition>();
  const paths = simplePaths();
  for (const path of paths) {
    path.steps.forEach((step, i) => {
      if (i === 0) return;
      const before = path.steps[i - 1].state;
      for (const t of faultModel.getTransitionData(before, step.event)) taken.add(t);
      // The eventless Connected → Done fires right after the event that completes a path.
      if (step.state.value === 'Done') for (const t of faultModel.root.states.Connected.always ?? []) taken.add(t);
    });
  }
  const covered = items.filter((item) => taken.has(item.transition)).length;
  const missing = items.filter((item) => !taken.has(item.transition)).map((item) => item.label);
  const line = `fault model coverage: ${covered}/${items.length} transitions by ${paths.length} paths`;
  return { covered, total: items.length, missing, paths: paths.length, line };
}
