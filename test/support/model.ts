/**
 * Model-based testing of the device machine.
 *
 * 1. Traverse the REAL machine purely with `xstate/graph`: invoked actors appear as the events
 *    `xstate.done.actor.<id>` / `xstate.error.actor.<id>` (one classified Failure per error class),
 *    next to START / STOP / REPROVISION / RETRY and HUB_LOST (current epoch per class, plus one
 *    stale epoch). The state space is kept finite by a small policy (maxHubAttempts 2) and by an
 *    abstract serialization (state value + the counters that steer guards), which ignores epoch,
 *    rngState and deadlines.
 * 2. Replay every generated path against a live actor of the machine with the fake actors and a
 *    SimulatedClock: each abstract step becomes an outcome (settle the parked fake promise, advance
 *    the clock to `retryAt`, send the plain event), and after each step the live actor must be in the
 *    same abstract state as the path says.
 *
 * Soundness of the abstraction: the guards read only the state value, `assignment !== null`,
 * `assignmentProven`, `retryStep`, `hubAttempts` (with the policy), the failure class, the epoch of HUB_LOST (which the
 * events are generated from, and rebound to at replay) and the hub retry window (which never trips:
 * it is an hour, the model's failures are stamped 0 and the replays take seconds of simulated time).
 * `dpsBusyUntil` stays null: the model's failed lookups carry no retry-after and no floor. The key
 * does not count failed lookups either, so the rest after a second one in a row (`dpsRestUntil`)
 * is explored only where its state was first reached without one (merged): counting them reaches
 * the rest, during which the hub budget never spends, hubAttempts runs to its bound and the graph
 * outgrows memory. Paths through a rest still replay exactly (the same machine, deterministic);
 * the machine tests and day-of-faults.test.ts cover DPS's wait and the rest.
 */
import { createActor, createMachine, type AnyStateNode, type AnyTransitionDefinition, type EventObject, type SnapshotFrom } from 'xstate';
import { getAdjacencyMap, getShortestPaths, getSimplePaths, type StatePath } from 'xstate/graph';
import { deviceMachine, leafStateName, type DeviceEvent, type DeviceInput, type DeviceMachine } from '../../machines/device.machine';
import type { ErrorClass, Failure, Phase, RetryPolicy } from '../../src/policy/types';
import { FakeCloud } from './fake-actors';

export type Snap = SnapshotFrom<DeviceMachine>;

/** The state a snapshot is in, as the device reports it (the leaf: `Connected`, not `{ Active: 'Connected' }`). */
export const stateOf = (snapshot: Snap): string => leafStateName(snapshot.value);

/** The events of the model. `stale` marks the old-epoch HUB_LOST (the machine ignores the field). */
export type ModelEvent = EventObject & {
  error?: Failure;
  output?: unknown;
  epoch?: number;
  failure?: Failure;
  stale?: true;
  /** A status lookup's answer: DPS moved the device, or it is still on the same hub. */
  lookup?: 'moved' | 'same';
};

export interface ModelPath {
  /** Which traversal configuration (input) the path belongs to. */
  config: string;
  input: DeviceInput;
  /** steps[0] is `xstate.init` with the initial snapshot; steps[i].state is the state after steps[i].event. */
  steps: Array<{ state: Snap; event: ModelEvent }>;
  state: Snap;
}

export const ERROR_CLASSES: readonly ErrorClass[] = ['transient', 'throttled', 'reprovision', 'parked', 'fatal'];

/** Small and bounded: two attempts per hub, a window that never trips during a replay. */
export const modelPolicy: RetryPolicy = {
  firstRetryMaxMs: 1000,
  minDelayMs: 1000,
  maxDelayMs: 8000,
  throttledMinDelayMs: 2000,
  retryAfterJitterMs: 500,
  quickRetries: 3,
  slowRetryMinMs: 60_000,
  parkedMinDelayMs: 900_000,
  parkedMaxDelayMs: 1_800_000,
  stableConnectionMs: 30_000,
  // Like the window: never trips in the model (its failures are all stamped 0).
  lookupAfterUnreachableMs: 3_600_000,
  maxHubAttempts: 2,
  hubRetryWindowMs: 3_600_000,
  hubRetryWindowMaxMs: 3_600_000,
};

/**
 * Inputs that together reach every guard branch: `hasAssignment` needs a cached assignment,
 * `reprovisionOnLoss` needs the baseline preset, `hubBudgetSpent` on HUB_LOST needs one attempt.
 */
export const modelConfigs: ReadonlyArray<{ name: string; input: DeviceInput }> = [
  { name: 'fresh', input: { registrationId: 'dev-1', policy: modelPolicy, seed: 1 } },
  {
    name: 'cached',
    input: {
      registrationId: 'dev-1',
      policy: modelPolicy,
      seed: 2,
      cachedAssignment: { hubHost: 'cached-hub.local', deviceId: 'dev-1', assignedAt: 1 },
    },
  },
  // No data directory: START asks DPS (status lookup) before registering.
  { name: 'no-cache', input: { registrationId: 'dev-1', policy: modelPolicy, seed: 5, lookupAtBoot: true } },
  { name: 'baseline', input: { registrationId: 'dev-1', policy: { ...modelPolicy, reprovisionOnLoss: true }, seed: 3 } },
  // With one attempt per hub, a lost session spends the budget at once (the only way to reach the
  // `hubBudgetSpent` branch of HUB_LOST: a connect resets the counter).
  { name: 'one-attempt', input: { registrationId: 'dev-1', policy: { ...modelPolicy, maxHubAttempts: 1 }, seed: 4 } },
];

/**
 * State (the leaf name) + what the guards read: hubAttempts, min(dpsAttempts, 2), retryStep,
 * whether the assigned hub (if any) is the one registrations hand out, and whether it is proven. Epoch, rngState, deadlines and errors are ignored.
 */
export function abstractKey(snapshot: Snap): string {
  const c = snapshot.context;
  return JSON.stringify([
    stateOf(snapshot),
    c.hubAttempts,
    Math.min(c.dpsAttempts, 2),
    c.retryStep,
    // Which hub, not just whether: a registration handing back the hub the device was on counts as
    // a DPS confirmation. Every other hub behaves alike (see movedFrom).
    c.assignment === null ? null : c.assignment.hubHost === REGISTERED_HUB,
    c.assignmentProven,
    c.assignmentConfirmed,
    c.connectionStable,
    c.reprovisionRequested,
    c.retryAfterMs !== null && c.lastError?.phase === 'dps',
  ]);
}

function phaseOf(actorId: string): Phase {
  if (actorId === 'provision' || actorId === 'reprovision') return 'dps';
  return actorId === 'lookupAssignment' ? 'dps-lookup' : 'hub-connect';
}

function modelFailure(errorClass: ErrorClass, phase: Phase, inDoubt = false): Failure {
  return {
    // DPS throttles with a retry-after (the wait a REPROVISION must not skip).
    ...(errorClass === 'throttled' && phase === 'dps' ? { retryAfterMs: 1000 } : {}),
    errorClass,
    rule: `model-${errorClass}${inDoubt ? '-in-doubt' : ''}`,
    phase,
    name: 'ModelError',
    message: errorClass,
    at: 0,
    ...(inDoubt ? { assignmentInDoubt: true as const } : {}),
  };
}

/** The hub the model's lookups name when DPS moved the device (never the one it was on). */
export const MOVED_HUB = 'hub-b.local';
/** The hub every registration in the model hands out. */
const REGISTERED_HUB = 'hub-a.local';

/**
 * Where a lookup that says "moved" sends the device: off the registered hub to MOVED_HUB, off any
 * other hub (the cached one, MOVED_HUB) to the registered one. So the machine can only tell hubs
 * apart as "the one a registration hands back" or "another", which is what the abstract key keeps.
 */
function movedFrom(hubHost: string): string {
  return hubHost === REGISTERED_HUB ? MOVED_HUB : REGISTERED_HUB;
}

/** Actor outcomes: a lookup answers either "moved" or "the same hub". */
function doneOutputs(actorId: string, snapshot: Snap): unknown[] {
  if (actorId === 'provision' || actorId === 'reprovision') return [{ hubHost: REGISTERED_HUB, deviceId: 'dev-1', assignedAt: 0, registeredAt: 0 }];
  if (actorId === 'openHub') return [{ connectedAt: 0 }];
  if (actorId === 'lookupAssignment') {
    const current = snapshot.context.assignment?.hubHost ?? REGISTERED_HUB;
    const moved = movedFrom(current);
    return [
      { hubHost: moved, deviceId: 'dev-1', checkedAt: 0, assignedAt: 0 },
      { hubHost: current, deviceId: 'dev-1', checkedAt: 0, assignedAt: 0 },
    ];
  }
  return [undefined];
}

/** Hub failures come in two kinds per class: plain, and one that puts the assignment in doubt. */
function hubFailures(phase: Phase): Failure[] {
  return ERROR_CLASSES.flatMap((errorClass) =>
    errorClass === 'fatal' ? [modelFailure(errorClass, phase)] : [modelFailure(errorClass, phase), modelFailure(errorClass, phase, true)],
  );
}

/** The events offered in a snapshot: plain commands always, actor outcomes for the live invokes. */
export function modelEvents(snapshot: Snap): ModelEvent[] {
  if (snapshot.status !== 'active') return [];
  const events: ModelEvent[] = [{ type: 'START' }, { type: 'STOP' }, { type: 'REPROVISION' }, { type: 'RETRY' }];
  for (const node of snapshot._nodes) {
    for (const invoke of node.invoke) {
      const done = `xstate.done.actor.${invoke.id}`;
      const error = `xstate.error.actor.${invoke.id}`;
      if (node.transitions.has(done)) {
        doneOutputs(invoke.id, snapshot).forEach((output, i) =>
          events.push({ type: done, output, ...(invoke.id === 'lookupAssignment' ? { lookup: i === 0 ? ('moved' as const) : ('same' as const) } : {}) }),
        );
      }
      if (node.transitions.has(error)) {
        if (invoke.id === 'openHub') {
          for (const failure of hubFailures('hub-connect')) events.push({ type: error, error: failure });
          continue;
        }
        // Closing has no class-dependent behaviour: one failure is enough.
        const classes = invoke.id === 'closeHub' ? (['transient'] as const) : ERROR_CLASSES;
        for (const errorClass of classes) events.push({ type: error, error: modelFailure(errorClass, phaseOf(invoke.id)) });
      }
    }
  }
  if (stateOf(snapshot) === 'Connected') {
    const epoch = snapshot.context.epoch;
    for (const failure of hubFailures('hub-session')) events.push({ type: 'HUB_LOST', epoch, failure });
    events.push({ type: 'HUB_LOST', epoch: epoch - 1, stale: true, failure: modelFailure('reprovision', 'hub-session') });
  }
  return events;
}

/** The error class an event carries, if any. */
export function classOf(event: ModelEvent): ErrorClass | undefined {
  return (event.error ?? event.failure)?.errorClass;
}

/** A short readable name of an abstract step, e.g. `error:openHub(throttled)`, `HUB_LOST(stale)`. */
export function describeEvent(event: ModelEvent): string {
  const type = event.type.replace(/^xstate\.(done|error)\.actor\./, '$1:');
  const doubt = (event.error ?? event.failure)?.assignmentInDoubt ? ',in-doubt' : '';
  if (event.type === 'HUB_LOST') return `HUB_LOST(${event.stale ? 'stale' : classOf(event)}${doubt})`;
  if (event.lookup) return `${type}(${event.lookup})`;
  const errorClass = event.type.startsWith('xstate.error.') ? classOf(event) : undefined;
  return errorClass ? `${type}(${errorClass}${doubt})` : type;
}

export function describePath(path: ModelPath): string {
  return `[${path.config}] ${path.steps
    .slice(1)
    .map((s) => describeEvent(s.event))
    .join(' → ')}`;
}

// The traversal option types are the machine's own event union; the model offers more shapes
// (actor done/error events), so the options are built once here with a cast.
type Options = Parameters<typeof getShortestPaths<DeviceMachine>>[1];

function traversalOptions(input: DeviceInput, extra: Record<string, unknown> = {}): Options {
  return {
    input,
    events: (snapshot: Snap) => modelEvents(snapshot) as DeviceEvent[],
    serializeState: (snapshot: Snap) => abstractKey(snapshot),
    ...extra,
  } as Options;
}

function toModelPath(config: string, input: DeviceInput, path: StatePath<Snap, DeviceEvent>): ModelPath {
  return { config, input, steps: path.steps as ModelPath['steps'], state: path.state };
}

/** head + tail, where tail starts in the abstract state where head ends. */
function joinPaths(head: ModelPath, tail: ModelPath): ModelPath {
  if (abstractKey(tail.steps[0].state) !== abstractKey(head.state)) throw new Error('paths cannot be joined');
  return { ...head, steps: [...head.steps, ...tail.steps.slice(1)], state: tail.state };
}

function extend(path: ModelPath, event: ModelEvent, state: Snap): ModelPath {
  return { ...path, steps: [...path.steps, { event, state }], state };
}

const isInDoubt = (event: ModelEvent) => (event.error ?? event.failure)?.assignmentInDoubt === true;

const isPlainCommand = (event: EventObject) => ['START', 'STOP', 'RETRY', 'REPROVISION'].includes(event.type);

type Adjacency = Record<string, { state: Snap; transitions: Record<string, { event: ModelEvent; state: Snap }> }>;

export interface GeneratedPaths {
  /** One shortest path to every abstract state. */
  shortest: ModelPath[];
  /** For every edge of the abstract graph that takes a machine transition: shortest path to its source + the edge. */
  edges: ModelPath[];
  /** Connected → … → Reprovisioning (failure-driven, simple paths) → Connecting → Connected (shortest). */
  failover: ModelPath[];
  /**
   * A hub refusal that puts the assignment in doubt → CheckingAssignment (status lookup) → DPS
   * names another hub → Connected there; or names the same hub → back off on it → Connected.
   */
  moved: ModelPath[];
  /** A throttled failure → BackingOff → the wait elapses → back to the same step. */
  throttled: ModelPath[];
  /** A fatal failure → Failed. */
  fatal: ModelPath[];
  /** Number of abstract states / edges per configuration, for the log. */
  sizes: Record<string, { states: number; edges: number }>;
}

/** The transitions a machine takes for `event` in (a snapshot equivalent to) `snapshot`. */
export function takenTransitions(machine: DeviceMachine, snapshot: Snap, event: ModelEvent): AnyTransitionDefinition[] {
  // The stored snapshot may be another concrete member of the same abstract state: rebind the epoch.
  const rebound =
    event.type === 'HUB_LOST' ? { ...event, epoch: event.stale ? snapshot.context.epoch - 1 : snapshot.context.epoch } : event;
  return machine.getTransitionData(snapshot, rebound as DeviceEvent);
}

export function generatePaths(machine: DeviceMachine = deviceMachine): GeneratedPaths {
  const out: GeneratedPaths = { shortest: [], edges: [], failover: [], moved: [], throttled: [], fatal: [], sizes: {} };
  for (const { name, input } of modelConfigs) {
    const adjacency = getAdjacencyMap(machine, traversalOptions(input) as never) as unknown as Adjacency;
    const shortest = getShortestPaths(machine, traversalOptions(input)).map((p) => toModelPath(name, input, p));
    const byKey = new Map(shortest.map((p) => [abstractKey(p.state), p]));
    out.shortest.push(...shortest);

    let edgeCount = 0;
    for (const [key, { state, transitions }] of Object.entries(adjacency)) {
      const head = byKey.get(key)!;
      for (const { event, state: next } of Object.values(transitions)) {
        if (takenTransitions(machine, state, event).length === 0) continue; // ignored event
        edgeCount++;
        const path = extend(head, event, next);
        out.edges.push(path);
        const errorClass = classOf(event);
        if (errorClass === 'fatal' && stateOf(next) === 'Failed' && !event.stale) out.fatal.push(path);
        if (errorClass === 'throttled' && stateOf(next) === 'BackingOff') {
          const wait = Object.values(adjacency[abstractKey(next)].transitions).find((t) => t.event.type === 'xstate.done.actor.waitUntil')!;
          out.throttled.push(extend(path, wait.event, wait.state));
        }
      }
    }
    out.sizes[name] = { states: shortest.length, edges: edgeCount };

    // Moved: the lookup routes, walked step by step through the abstract graph from the first Connected.
    const start = shortest.find((p) => stateOf(p.state) === 'Connected')!;
    const walk = (...steps: Array<(event: ModelEvent) => boolean>): ModelPath | undefined => {
      let path = start;
      for (const accepts of steps) {
        const next = Object.values(adjacency[abstractKey(path.state)]?.transitions ?? {}).find((t) => accepts(t.event));
        if (!next) return undefined;
        path = extend(path, next.event, next.state);
      }
      return path;
    };
    const lost = (doubt: boolean) => (e: ModelEvent) => e.type === 'HUB_LOST' && !e.stale && classOf(e) === 'transient' && isInDoubt(e) === doubt;
    const refused = (e: ModelEvent) => e.type === 'xstate.error.actor.openHub' && classOf(e) === 'reprovision' && isInDoubt(e);
    const waited = (e: ModelEvent) => e.type === 'xstate.done.actor.waitUntil';
    const answered = (kind: 'moved' | 'same') => (e: ModelEvent) => e.lookup === kind;
    const connects = (e: ModelEvent) => e.type === 'xstate.done.actor.openHub';
    for (const route of [
      walk(lost(true), waited, answered('moved'), connects),
      walk(lost(false), waited, refused, answered('moved'), connects),
      walk(lost(true), waited, answered('same'), waited, connects),
    ]) {
      if (route) out.moved.push(route);
    }

    // Failover: from the first Connected, failure-driven simple paths to Reprovisioning (no
    // commands, no fatal, no reconnect on the way), then the shortest way back to Connected.
    const connected = shortest.find((p) => stateOf(p.state) === 'Connected')!;
    const leg1 = getSimplePaths(
      machine,
      traversalOptions(input, {
        fromState: connected.state,
        // Refusals that put the assignment in doubt lead to a lookup, not here (see `moved`); left
        // out, they also keep the number of simple paths small.
        filterEvents: (_: Snap, event: ModelEvent) =>
          !isPlainCommand(event) && !event.stale && classOf(event) !== 'fatal' && !isInDoubt(event) && event.type !== 'xstate.done.actor.openHub',
        toState: (s: Snap) => stateOf(s) === 'Reprovisioning',
      }),
    ).map((p) => joinPaths(connected, toModelPath(name, input, p)));
    for (const head of leg1) {
      const [leg2] = getShortestPaths(
        machine,
        traversalOptions(input, {
          fromState: head.state,
          filterEvents: (_: Snap, event: ModelEvent) => !isPlainCommand(event),
          toState: (s: Snap) => stateOf(s) === 'Connected',
        }),
      );
      out.failover.push(joinPaths(head, toModelPath(name, input, leg2)));
    }
  }
  return out;
}

/** Drop paths that are a prefix of another path (replaying the longer one checks every step). */
export function withoutPrefixes(paths: ModelPath[]): ModelPath[] {
  const signature = (p: ModelPath) => [p.config, ...p.steps.slice(1).map((s) => describeEvent(s.event))].join('|');
  const sorted = [...paths].sort((a, b) => b.steps.length - a.steps.length);
  const kept: ModelPath[] = [];
  const prefixes = new Set<string>();
  for (const path of sorted) {
    const sig = signature(path);
    if (prefixes.has(sig)) continue;
    kept.push(path);
    const parts = sig.split('|');
    for (let i = 1; i <= parts.length; i++) prefixes.add(parts.slice(0, i).join('|'));
  }
  return kept;
}

// ---------------------------------------------------------------------------------------------
// Coverage, computed from the machine definition

export interface CoverageItem {
  label: string;
  source: AnyStateNode;
  transition: AnyTransitionDefinition;
}

function guardLabel(guard: unknown): string {
  if (!guard) return '';
  if (typeof guard === 'string') return ` [${guard}]`;
  if (typeof guard === 'object' && guard && 'type' in guard) return ` [${String((guard as { type: unknown }).type)}]`;
  return ' [guard]';
}

export function allStateNodes(machine: DeviceMachine): AnyStateNode[] {
  const walk = (node: AnyStateNode): AnyStateNode[] => Object.values(node.states).flatMap((child) => [child, ...walk(child)]);
  return walk(machine.root);
}

/** Every transition definition of the machine (each guarded branch separately). */
export function allTransitions(machine: DeviceMachine): CoverageItem[] {
  const items: CoverageItem[] = [];
  for (const source of allStateNodes(machine)) {
    for (const [eventType, definitions] of source.transitions) {
      definitions.forEach((transition, index) => {
        const targets = transition.target?.map((t) => t.key).join(',') ?? '(ignored)';
        items.push({ label: `${source.key} --${eventType}#${index}${guardLabel(transition.guard)}--> ${targets}`, source, transition });
      });
    }
  }
  return items;
}

export interface Coverage {
  states: { covered: number; total: number; missing: string[] };
  transitions: { covered: number; total: number; missing: string[] };
  /** Coarser: distinct source state + event type + target. */
  triples: { covered: number; total: number };
  line: string;
}

export function coverage(machine: DeviceMachine, paths: ModelPath[]): Coverage {
  const nodes = allStateNodes(machine);
  const items = allTransitions(machine);
  const seenNodes = new Set<AnyStateNode>();
  const seenTransitions = new Set<AnyTransitionDefinition>();
  for (const path of paths) {
    path.steps.forEach((step, i) => {
      step.state._nodes.forEach((n) => seenNodes.add(n));
      if (i > 0) takenTransitions(machine, path.steps[i - 1].state, step.event).forEach((t) => seenTransitions.add(t));
    });
  }
  const triple = (item: CoverageItem) => `${item.source.key}|${item.transition.eventType}|${item.transition.target?.map((t) => t.key).join(',') ?? ''}`;
  const allTriples = new Set(items.map(triple));
  const coveredTriples = new Set(items.filter((i) => seenTransitions.has(i.transition)).map(triple));
  const states = {
    covered: nodes.filter((n) => seenNodes.has(n)).length,
    total: nodes.length,
    missing: nodes.filter((n) => !seenNodes.has(n)).map((n) => n.key),
  };
  const transitions = {
    covered: items.filter((i) => seenTransitions.has(i.transition)).length,
    total: items.length,
    missing: items.filter((i) => !seenTransitions.has(i.transition)).map((i) => i.label),
  };
  const triples = { covered: coveredTriples.size, total: allTriples.size };
  const line =
    `model coverage: ${states.covered}/${states.total} states, ${transitions.covered}/${transitions.total} transitions ` +
    `(every guarded branch; ${triples.covered}/${triples.total} source+event+target)`;
  return { states, transitions, triples, line };
}

// ---------------------------------------------------------------------------------------------
// Replay against a live actor with the fake actors and the simulated clock

type Queue = FakeCloud['provisions'] | FakeCloud['lookups'] | FakeCloud['opens'] | FakeCloud['closes'];

function queueOf(cloud: FakeCloud, actorId: string): Queue {
  if (actorId === 'provision' || actorId === 'reprovision') return cloud.provisions;
  if (actorId === 'lookupAssignment') return cloud.lookups;
  if (actorId === 'openHub') return cloud.opens;
  if (actorId === 'closeHub') return cloud.closes;
  throw new Error(`no fake queue for actor '${actorId}'`);
}

/** Take the one pending (not aborted) invocation of an actor out of its queue. */
function takePending(cloud: FakeCloud, actorId: string): Queue[number] {
  const queue = queueOf(cloud, actorId);
  const live = queue.filter((p) => !p.aborted);
  if (live.length !== 1) throw new Error(`expected one pending '${actorId}', found ${live.length}`);
  queue.splice(queue.indexOf(live[0] as never), 1);
  return live[0];
}

export class ReplayMismatch extends Error {}

/**
 * Let the live actor settle after a step. The fakes settle on microtasks and the simulated clock
 * fires synchronously, so one macrotask turn drains everything (FakeCloud.flush takes five turns,
 * which is the same result at five times the cost over thousands of replayed steps).
 */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Replays paths against `machine` (the real one by default) with one fake cloud and one provided
 * machine (`provide` costs ~0.5 ms, more than a whole replay); the fakes are reset between paths.
 */
export class Replayer {
  private readonly cloud = new FakeCloud();
  private readonly provided;

  constructor(machine: DeviceMachine = deviceMachine) {
    this.cloud.parkCloses = true;
    this.provided = this.cloud.machine(machine);
  }

  /** Replays one path; throws at the first divergence. */
  async replay(path: ModelPath): Promise<void> {
    const cloud = this.cloud;
    cloud.provisions.length = 0;
    cloud.lookups.length = 0;
    cloud.opens.length = 0;
    cloud.closes.length = 0;
    cloud.sessions.clear();
    const actor = createActor(this.provided, { clock: cloud.clock, input: path.input });
    const check = (i: number, expected: Snap) => {
      const live = actor.getSnapshot();
      if (JSON.stringify(live.value) !== JSON.stringify(expected.value) || abstractKey(live) !== abstractKey(expected)) {
        throw new ReplayMismatch(
          `step ${i} (${i === 0 ? 'init' : describeEvent(path.steps[i].event)}): model ${abstractKey(expected)}, live ${abstractKey(live)}\n  path ${describePath(path)}`,
        );
      }
    };
    try {
      actor.start();
      await settle();
      check(0, path.steps[0].state);
      for (let i = 1; i < path.steps.length; i++) {
        await perform(cloud, actor, path.steps[i].event);
        await settle();
        check(i, path.steps[i].state);
      }
      check(path.steps.length - 1, path.state);
    } finally {
      actor.stop();
    }
  }
}

/** Replays one path against `machine`; throws at the first divergence. */
export async function replay(path: ModelPath, machine: DeviceMachine = deviceMachine): Promise<void> {
  await new Replayer(machine).replay(path);
}

/** What the model's failure carries besides its class: doubt about the assignment, a retry-after. */
function inDoubtOf(event: ModelEvent): Partial<Failure> {
  const failure = event.error ?? event.failure;
  return {
    ...(failure?.assignmentInDoubt ? { assignmentInDoubt: true as const } : {}),
    ...(failure?.retryAfterMs !== undefined ? { retryAfterMs: failure.retryAfterMs } : {}),
  };
}

async function perform(cloud: FakeCloud, actor: ReturnType<typeof createActor<DeviceMachine>>, event: ModelEvent): Promise<void> {
  const live = actor.getSnapshot().context;
  if (isPlainCommand(event)) {
    actor.send(event as DeviceEvent);
    return;
  }
  if (event.type === 'HUB_LOST') {
    const failure = cloud.failure(classOf(event)!, inDoubtOf(event), 'hub-session');
    if (event.stale) {
      actor.send({ type: 'HUB_LOST', epoch: live.epoch - 1, failure });
      return;
    }
    const sendBack = cloud.sessions.get(live.epoch);
    if (!sendBack) throw new ReplayMismatch(`HUB_LOST: no live hub session for epoch ${live.epoch}`);
    sendBack({ type: 'HUB_LOST', epoch: live.epoch, failure });
    return;
  }
  const outcome = /^xstate\.(done|error)\.actor\.(.+)$/.exec(event.type);
  if (!outcome) throw new Error(`unknown model event ${event.type}`);
  const [, kind, actorId] = outcome;
  if (actorId === 'waitUntil' || actorId === 'stableConnection') {
    if (kind !== 'done') throw new Error(`${actorId} never fails`);
    const deadline = actorId === 'waitUntil' ? live.retryAt : (live.connectedAt ?? 0) + live.policy.stableConnectionMs;
    cloud.clock.increment(Math.max(0, (deadline ?? cloud.clock.now()) - cloud.clock.now()));
    return;
  }
  const pending = takePending(cloud, actorId);
  if (kind === 'error') {
    pending.reject(cloud.failure(classOf(event)!, inDoubtOf(event), phaseOf(actorId)));
  } else if (actorId === 'lookupAssignment') {
    const current = live.assignment?.hubHost ?? cloud.hub.hubHost;
    const hubHost = event.lookup === 'same' ? current : movedFrom(current);
    pending.resolve({ hubHost, deviceId: cloud.hub.deviceId, checkedAt: cloud.clock.now(), assignedAt: cloud.clock.now() } as never);
  } else if (actorId === 'provision' || actorId === 'reprovision') {
    pending.resolve({ ...cloud.hub, assignedAt: cloud.clock.now(), registeredAt: cloud.clock.now() } as never);
  } else if (actorId === 'openHub') {
    pending.resolve({ connectedAt: cloud.clock.now() } as never);
  } else {
    pending.resolve(undefined as never);
  }
}

/** Replays every path (or until the first divergence); returns the failures (path + message). */
export async function replayAll(paths: ModelPath[], machine: DeviceMachine = deviceMachine, opts: { stopAtFirst?: boolean } = {}) {
  const failures: Array<{ path: ModelPath; message: string }> = [];
  const replayer = new Replayer(machine);
  for (const path of paths) {
    try {
      await replayer.replay(path);
    } catch (error) {
      failures.push({ path, message: (error as Error).message });
      if (opts.stopAtFirst) break;
    }
  }
  return failures;
}

// ---------------------------------------------------------------------------------------------
// Mutants: the same machine with one transition retargeted

/** The guard type of a transition config (`else` for an unguarded one). */
function guardTypeOf(transition: unknown): string {
  const guard = (transition as { guard?: unknown } | string)?.constructor === Object ? (transition as { guard?: unknown }).guard : undefined;
  if (!guard) return 'else';
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && 'type' in guard) return String((guard as { type: unknown }).type);
  return 'inline';
}

/** State configs, keyed by config path: `Idle`, `Active.Connecting`, … */
type StateConfig = Record<string, any> & { states?: Record<string, StateConfig> };

/** The config path of the state called `key` (keys are unique in the device machine). */
function configPathOf(states: Record<string, StateConfig>, key: string): string[] | undefined {
  for (const [name, child] of Object.entries(states)) {
    if (name === key) return [name];
    const below = child.states && configPathOf(child.states, key);
    if (below) return [name, ...below];
  }
  return undefined;
}

/** A copy of `states` where the state at `path` is `replacement` (everything else shared). */
function withState(states: Record<string, StateConfig>, [head, ...rest]: string[], replacement: StateConfig): Record<string, StateConfig> {
  const node = rest.length ? { ...states[head], states: withState(states[head].states!, rest, replacement) } : replacement;
  return { ...states, [head]: node };
}

/**
 * A copy of the device machine whose transition `eventType` in `state` (a leaf name, wherever it
 * is nested) goes to `target` instead. Targets resolve as in the machine: a sibling name, or
 * `Active.X` from outside Active.
 * The branch is chosen by its guard: a guard type (first match), `type#n` for the n-th (0-based)
 * branch with that guard type, or `else` for the unguarded one. Built from the machine's config
 * and implementations, so everything else is identical.
 */
export function retarget(state: string, eventType: string, branch: string, target: string): DeviceMachine {
  const config = deviceMachine.config as unknown as { states: Record<string, StateConfig> } & Record<string, unknown>;
  const path = configPathOf(config.states, state);
  if (!path) throw new Error(`no state '${state}'`);
  const node = { ...path.reduce<StateConfig>((states, name) => states.states![name], config as StateConfig) };
  const swap = (transitions: unknown) => {
    const list = Array.isArray(transitions) ? [...transitions] : [transitions];
    const [guardType, nth = '0'] = branch.split('#');
    const index = list.map((t, i) => [guardTypeOf(t), i] as const).filter(([g]) => g === guardType)[Number(nth)]?.[1];
    if (index === undefined) throw new Error(`no branch '${branch}' of ${state} ${eventType}`);
    list[index] = { ...(typeof list[index] === 'string' ? { target: list[index] } : list[index]), target };
    return list;
  };
  const invokeEvent = /^xstate\.(done|error)\.actor\.(.+)$/.exec(eventType);
  if (invokeEvent) {
    const [, kind, id] = invokeEvent;
    const key = kind === 'done' ? 'onDone' : 'onError';
    const invokes = (Array.isArray(node.invoke) ? node.invoke : [node.invoke]).map((inv: Record<string, any>) =>
      inv.id === id ? { ...inv, [key]: swap(inv[key]) } : inv,
    );
    node.invoke = invokes.length === 1 ? invokes[0] : invokes;
  } else {
    node.on = { ...node.on, [eventType]: swap(node.on[eventType]) };
  }
  const mutated = { ...config, states: withState(config.states, path, node) };
  return createMachine(mutated as never, deviceMachine.implementations as never) as unknown as DeviceMachine;
}
