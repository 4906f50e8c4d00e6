/**
 * One provided device machine for every device of the process, instead of one per device.
 *
 * `deviceMachine.provide()` copies the whole machine definition (every state node): measured
 * 24.6 KB of heap per call, about two thirds of an idle device. The shared machine's actors and
 * actions are thin delegates that find the calling device's own implementations through its
 * actor system (one per root actor, shared by its children), registered by `bind(actor)`.
 *
 * The delegates call the per-device logic's creator (`fromPromise(fn).config === fn` in XState
 * v5, not part of its typings). That is checked once at load: if it ever stops holding, each
 * device gets its own `provide()` again: more memory, same behaviour.
 */
import { fromCallback, fromPromise, type AnyActorRef, type EventObject } from 'xstate';
import { deviceMachine, type Assignment, type HubAttemptInput, type ProvisionResult } from '../machines/device.machine';

type PromiseLogic<O, I> = ReturnType<typeof fromPromise<O, I>>;

export interface DeviceImplementations {
  actors: {
    provision: PromiseLogic<ProvisionResult, { registrationId: string; attempt: number }>;
    openHub: PromiseLogic<{ connectedAt: number }, HubAttemptInput>;
    hubSession: ReturnType<typeof fromCallback<EventObject, HubAttemptInput>>;
    closeHub: PromiseLogic<void, { epoch: number }>;
    waitUntil: PromiseLogic<void, { retryAt: number }>;
  };
  saveAssignment(assignment: Assignment): void;
  forgetAssignment(): void;
}

type Creator = (args: unknown) => unknown;

function creatorOf(logic: unknown): Creator | undefined {
  const config = (logic as { config?: unknown }).config;
  return typeof config === 'function' ? (config as Creator) : undefined;
}

const probe = (): Promise<void> => Promise.resolve();
const probeCallback = (): void => undefined;
/** Whether this XState keeps the creator where the delegates look for it. */
export const CAN_SHARE_MACHINE = creatorOf(fromPromise(probe)) === probe && creatorOf(fromCallback(probeCallback)) === probeCallback;

interface Bound {
  creators: Record<keyof DeviceImplementations['actors'], Creator>;
  implementations: DeviceImplementations;
}

const bySystem = new WeakMap<object, Bound>();

function boundTo(system: unknown): Bound {
  const bound = bySystem.get(system as object);
  if (!bound) throw new Error('device machine: no implementations bound to this actor system (bind(actor) before start())');
  return bound;
}

let shared: typeof deviceMachine | undefined;

function sharedMachine(): typeof deviceMachine {
  shared ??= deviceMachine.provide({
    actors: {
      provision: fromPromise<ProvisionResult, { registrationId: string; attempt: number }>(
        (args) => boundTo(args.system).creators.provision(args) as Promise<ProvisionResult>,
      ),
      openHub: fromPromise<{ connectedAt: number }, HubAttemptInput>((args) => boundTo(args.system).creators.openHub(args) as Promise<{ connectedAt: number }>),
      hubSession: fromCallback<EventObject, HubAttemptInput>((args) => boundTo(args.system).creators.hubSession(args) as (() => void) | void),
      closeHub: fromPromise<void, { epoch: number }>((args) => boundTo(args.system).creators.closeHub(args) as Promise<void>),
      waitUntil: fromPromise<void, { retryAt: number }>((args) => boundTo(args.system).creators.waitUntil(args) as Promise<void>),
    },
    actions: {
      saveAssignment: ({ system }, params) => boundTo(system).implementations.saveAssignment(params.assignment),
      forgetAssignment: ({ system }) => boundTo(system).implementations.forgetAssignment(),
    },
  });
  return shared;
}

/** The machine to create the device's actor from, and `bind` to call right after createActor. */
export function machineFor(implementations: DeviceImplementations): { machine: typeof deviceMachine; bind(actor: AnyActorRef): void } {
  if (!CAN_SHARE_MACHINE) {
    return {
      machine: deviceMachine.provide({
        actors: implementations.actors,
        actions: {
          saveAssignment: (_, params) => implementations.saveAssignment(params.assignment),
          forgetAssignment: () => implementations.forgetAssignment(),
        },
      }),
      bind: () => undefined,
    };
  }
  const creators = {} as Bound['creators'];
  for (const [name, logic] of Object.entries(implementations.actors)) {
    creators[name as keyof Bound['creators']] = creatorOf(logic)!;
  }
  return {
    machine: sharedMachine(),
    bind: (actor) => bySystem.set(actor.system, { creators, implementations }),
  };
}
