/**
 * Moving a device to another ID scope (IoT Central's migration tool, the `DeviceMove` command of
 * `dtmi:azureiot:DeviceMigration;1`; see src/pnp/migration.ts for the evidence), and the ID scope
 * the device provisions against: the one copy of it, which the DPS actors read on every attempt.
 *
 * A move: the payload is checked (400 otherwise), the new scope is persisted with the scope it
 * came from (500, and no move, if that write fails), the command is answered 200, and the device
 * reprovisions (the machine's REPROVISION) against the new scope. DPS decides:
 * - it assigns the device: the move is complete (persisted as such, `completed` event);
 * - it refuses the device under the new scope (a fatal answer: 401 not enrolled / wrong key, 403,
 *   404, a failed registration, a refused CONNECT), or refuses the CONNECT as an unknown ID scope
 *   (CONNACK 3, as Azure answers an unknown scope) `UNKNOWN_SCOPE_REFUSALS` times in a row: the
 *   device rolls back to the old scope (persisted, `rolled-back` event, a warning) and the
 *   registration is retried there after a short backoff, instead of ending Failed;
 * - anything else (DPS unreachable, throttled, busy) is retried on the new scope as usual: it says
 *   nothing about the scope.
 * A restart during a move resumes it (the pending move is persisted): the same verdicts apply.
 * The outbox and the reported-properties queue are the device's, not the scope's: they carry over.
 *
 * Why here and not in the machine: the scope is configuration the DPS actors read, like the keys
 * (src/actors/credentials.ts), and a rollback is a verdict on DPS's answer, like the classifier's.
 * The machine still takes every connection decision: it gets REPROVISION for a move and, for a
 * rolled-back one, a transient failure (rule `migration-rolled-back`), i.e. its usual short DPS
 * backoff before registering again, now under the old scope. Its states, events and pictures are
 * unchanged.
 */
import type { ProvisionResult } from '../machines/device.machine';
import type { PromiseWork } from './actors/work';
import type { CommandOutcome } from './pnp/commands';
import { InvalidDeviceMoveError, parseDeviceMove } from './pnp/migration';
import type { Failure } from './policy/types';
import type { IdScopeStore, PersistedIdScope } from './store/id-scope';
import type { PartLogger } from './logger';

/** CONNACK 3 refusals in a row under a new scope that roll it back (a busy DPS answers 3 too, rarely twice). */
export const UNKNOWN_SCOPE_REFUSALS = 3;

/** The `migration` event: a move started, was confirmed by DPS, or was rolled back. */
export interface MigrationEvent {
  phase: 'started' | 'completed' | 'rolled-back';
  /** The scope the device moves (or moved) away from. */
  from: string;
  /** The scope it moves (or tried to move) to. */
  to: string;
  /** rolled-back: the classifier rule of DPS's refusal (e.g. dps-unauthorized). */
  reason?: string;
  /** completed: the hub DPS assigned under the new scope. */
  hubHost?: string;
}

export interface MigrationSettings {
  /** The `idScope` option. */
  configuredIdScope: string;
  store: IdScopeStore;
  logger: PartLogger;
  /** The `migration` event to the application. */
  emit(event: MigrationEvent): void;
}

const sameScope = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

function isFailure(value: unknown): value is Failure {
  const candidate = value as Partial<Failure> | null;
  return typeof candidate === 'object' && candidate !== null && typeof candidate.errorClass === 'string' && typeof candidate.rule === 'string';
}

/** The device's ID scope: the configured one, or the one a move persisted; and the moves. */
export class IdScopeMigration {
  #current: string;
  /** The scope a move not yet confirmed by DPS came from (where a refusal rolls back to). */
  #pendingFrom: string | null;
  #unknownScopeRefusals = 0;

  constructor(private readonly settings: MigrationSettings) {
    const persisted = settings.store.load();
    this.#current = persisted?.idScope ?? settings.configuredIdScope;
    this.#pendingFrom = persisted?.pendingFrom ?? null;
    if (persisted && !sameScope(persisted.idScope, settings.configuredIdScope)) {
      settings.logger.info(
        { idScope: persisted.idScope, configured: settings.configuredIdScope, pendingFrom: persisted.pendingFrom },
        persisted.pendingFrom ? 'resuming the move to another ID scope (DeviceMove)' : 'using the ID scope the device moved to (DeviceMove)',
      );
    }
  }

  /** The ID scope DPS requests use now. */
  get idScope(): string {
    return this.#current;
  }

  /** A move is under way (DPS has not yet accepted the device under the new scope). */
  get pending(): boolean {
    return this.#pendingFrom !== null;
  }

  /**
   * The built-in `DeviceMove` on a parsed payload: 400 for a bad one, 409 while a move is under
   * way, 200 (nothing to do) for the current scope, 500 if the move cannot be persisted; else 200,
   * and `reprovision` runs once the response is sent.
   */
  move(payload: unknown, reprovision: () => void): CommandOutcome {
    const { logger } = this.settings;
    let target: string;
    try {
      target = parseDeviceMove(payload).idScope;
    } catch (error) {
      if (!(error instanceof InvalidDeviceMoveError)) throw error;
      logger.warn({ err: error.message }, 'DeviceMove refused');
      return { status: error.status, payload: { message: error.message } };
    }
    if (this.#pendingFrom !== null) {
      return { status: 409, payload: { message: `a move from ID scope ${this.#pendingFrom} to ${this.#current} is under way` } };
    }
    if (sameScope(target, this.#current)) return { status: 200, payload: { idScope: this.#current, message: 'already on this ID scope' } };
    const from = this.#current;
    try {
      this.settings.store.save({ idScope: target, pendingFrom: from });
    } catch (error) {
      logger.error({ err: (error as Error).message }, 'DeviceMove: could not persist the new ID scope; not moving');
      return { status: 500, payload: { message: `could not persist the new ID scope: ${(error as Error).message}` } };
    }
    this.#current = target;
    this.#pendingFrom = from;
    this.#unknownScopeRefusals = 0;
    logger.info({ from, to: target }, 'DeviceMove: answering, then provisioning against the new ID scope');
    this.settings.emit({ phase: 'started', from, to: target });
    return { status: 200, payload: { idScope: target, message: 'moving to the new ID scope' }, after: reprovision };
  }

  /** The provision work, watched: DPS's verdict on a pending move completes it or rolls it back. */
  watch(work: PromiseWork<ProvisionResult, { registrationId: string; attempt: number }>): PromiseWork<ProvisionResult, { registrationId: string; attempt: number }> {
    return async (args) => {
      // A move that lands during a registration (the machine swallows REPROVISION there) makes
      // that answer the old scope's: register again under the new one. Bounded: a second move
      // waits for this one's verdict (409), so the scope changes at most once per attempt.
      for (;;) {
        const scope = this.#current;
        let result: ProvisionResult;
        try {
          result = await work(args);
        } catch (error) {
          if (scope !== this.#current && !args.signal.aborted) continue;
          throw this.#refused(scope, error);
        }
        if (scope !== this.#current && !args.signal.aborted) continue;
        this.#registered(scope, result);
        return result;
      }
    };
  }

  #registered(scope: string, result: ProvisionResult): void {
    const from = this.#pendingFrom;
    if (from === null || scope !== this.#current) return;
    this.#pendingFrom = null;
    this.#unknownScopeRefusals = 0;
    this.settings.logger.info({ from, to: scope, hubHost: result.hubHost }, 'moved to the new ID scope: DPS assigned the device');
    // The event first: its handler queues the reported properties again for the new twin. A crash
    // before the write below leaves the move pending, so the next boot repeats it (and the resend).
    this.settings.emit({ phase: 'completed', from, to: scope, hubHost: result.hubHost });
    this.#persist({ idScope: scope, pendingFrom: null });
  }

  /** What the machine gets for a failed registration: a refusal of a pending move becomes a rollback. */
  #refused(scope: string, error: unknown): unknown {
    const from = this.#pendingFrom;
    if (from === null || scope !== this.#current || !isFailure(error)) return error;
    const unknownScope = error.phase === 'dps' && error.rule === 'connack-3-server-unavailable';
    if (unknownScope) this.#unknownScopeRefusals++;
    else if (error.errorClass !== 'fatal') {
      this.#unknownScopeRefusals = 0; // "in a row": DPS answered something else in between
      return error;
    }
    if (unknownScope && this.#unknownScopeRefusals < UNKNOWN_SCOPE_REFUSALS) return error;
    this.#current = from;
    this.#pendingFrom = null;
    this.#unknownScopeRefusals = 0;
    if (sameScope(from, this.settings.configuredIdScope)) this.#forget();
    else this.#persist({ idScope: from, pendingFrom: null });
    const reason = unknownScope ? 'unknown-id-scope' : error.rule;
    this.settings.logger.warn(
      { from, to: scope, reason, rule: error.rule },
      `DPS refused the device under the new ID scope ${scope}; rolled back to ${from}`,
    );
    this.settings.emit({ phase: 'rolled-back', from, to: scope, reason });
    // Retried on the old scope after a short backoff: the refusal was the new scope's, not the device's.
    const rolledBack: Failure = {
      ...error,
      errorClass: 'transient',
      rule: 'migration-rolled-back',
      message: `${error.rule} under ID scope ${scope}; rolled back to ${from}: ${error.message}`,
    };
    delete rolledBack.retryAfterMs;
    delete rolledBack.minDelayMs;
    delete rolledBack.assignmentInDoubt;
    delete rolledBack.serverBusy;
    return rolledBack;
  }

  /** A verdict already taken is not undone by a failed write: the next boot repeats the move's registration at worst. */
  #persist(value: PersistedIdScope): void {
    try {
      this.settings.store.save(value);
    } catch (error) {
      this.settings.logger.warn({ err: (error as Error).message }, 'could not persist the ID scope');
    }
  }

  #forget(): void {
    try {
      this.settings.store.clear();
    } catch (error) {
      this.settings.logger.warn({ err: (error as Error).message }, 'could not remove the persisted ID scope');
    }
  }
}
