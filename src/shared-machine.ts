/**
 * One provided device machine for every device of the process, instead of one per device.
 *
 * `deviceMachine.provide()` copies the whole machine definition (every state node): measured
 * 24.6 KB of heap per call, about two thirds of an idle device. The shared machine's actors and
 * actions are thin delegates that call the calling device's own work functions, found through
 * its actor system (one per root actor, shared by its children) and registered by `bind(actor)`.
 */
import { fromCallback, fromPromise, type AnyActorRef, type EventObject } from 'xstate';
import { deviceMachine, type Assignment, type HubAttemptInput, type LookupResult, type ProvisionResult } from '../machines/device.machine';
import type { CallbackWork, PromiseWork } from './actors/work';

/** A device's own implementations of the machine's actors and actions. */
export interface DeviceImplementations {
  work: {
    provision: PromiseWork<ProvisionResult, { registrationId: string; attempt: number }>;
    lookupAssignment: PromiseWork<LookupResult, { registrationId: string }>;
    openHub: PromiseWork<{ connectedAt: number }, HubAttemptInput>;
    hubSession: CallbackWork<HubAttemptInput>;
    closeHub: PromiseWork<void, { epoch: number }>;
    waitUntil: PromiseWork<void, { retryAt: number }>;
  };
  saveAssignment(assignment: Assignment): void;
}

const bySystem = new WeakMap<object, DeviceImplementations>();

function boundTo(system: unknown): DeviceImplementations {
  const bound = bySystem.get(system as object);
  if (!bound) throw new Error('device machine: no implementations bound to this actor system (bind(actor) before start())');
  return bound;
}

let shared: typeof deviceMachine | undefined;

function sharedMachine(): typeof deviceMachine {
  shared ??= deviceMachine.provide({
    actors: {
      provision: fromPromise<ProvisionResult, { registrationId: string; attempt: number }>((args) => boundTo(args.system).work.provision(args)),
      lookupAssignment: fromPromise<LookupResult, { registrationId: string }>((args) => boundTo(args.system).work.lookupAssignment(args)),
      openHub: fromPromise<{ connectedAt: number }, HubAttemptInput>((args) => boundTo(args.system).work.openHub(args)),
      hubSession: fromCallback<EventObject, HubAttemptInput>((args) => boundTo(args.system).work.hubSession(args)),
      closeHub: fromPromise<void, { epoch: number }>((args) => boundTo(args.system).work.closeHub(args)),
      waitUntil: fromPromise<void, { retryAt: number }>((args) => boundTo(args.system).work.waitUntil(args)),
    },
    actions: {
      saveAssignment: ({ system }, params) => boundTo(system).saveAssignment(params.assignment),
    },
  });
  return shared;
}

/** The machine to create the device's actor from, and `bind` to call right after createActor. */
export function machineFor(implementations: DeviceImplementations): { machine: typeof deviceMachine; bind(actor: AnyActorRef): void } {
  return {
    machine: sharedMachine(),
    bind: (actor) => bySystem.set(actor.system, implementations),
  };
}
