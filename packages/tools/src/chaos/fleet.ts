/**
 * The devices under test: N real devices (createDevice, the unmodified Azure SDK over TLS), each
 * with a compact timeline of what it did (attempts, losses, sessions, user commands, its last
 * transitions). Every transition is also handed to the backoff audit and to the secret scanner.
 */
import { join } from 'node:path';
import { createDevice, type Device, type DeviceSnapshot, type DeviceStateName, type StateChange } from 'hubstate';
import { createLogger, monotonicNow } from 'hubstate';
import { seedFrom, systemClock } from 'hubstate/internal';
import type { BackoffAudit } from './backoff-audit';
import type { SoakCloud } from './cloud';
import type { DeliveryLedger } from './ledger';
import type { SoakPlan } from './options';
import type { SecretScanner } from './secrets';
import { sleep, until, type RunTimers } from './timing';

export interface Track {
  index: number;
  registrationId: string;
  device: Device;
  state: DeviceStateName;
  connectedSince: number | null;
  attempts: number[];
  /** Losses of stable connections (lasted stableConnectionMs): only those restart the curves. */
  losses: number[];
  /** Sessions that ended before stableConnectionMs (the next attempt on the curve). */
  shortSessions: number;
  /** Entries into Connected, and exits from it (same order). */
  connects: number[];
  disconnects: number[];
  userCommands: number[];
  accepted: number;
  rejected: number;
  failedRules: string[];
  /** The last transitions (bounded ring), reported for devices that end up late. */
  recent: string[];
}

/** A device's state and last entry into Connected at one moment. */
export interface EndState {
  state: DeviceStateName;
  connectedSince: number | null;
}

const RECENT_TRANSITIONS = 40;
const ATTEMPT_STATES: ReadonlySet<DeviceStateName> = new Set(['Provisioning', 'Reprovisioning', 'CheckingAssignment', 'Connecting']);
const USER_EVENTS: ReadonlySet<string> = new Set(['REPROVISION', 'STOP', 'RETRY']);
/** An accepted message waiting longer than this for its PUBACK means a stalled session, not a healthy fleet. */
const HEALTHY_PUBACK_WAIT_MS = 2000;
/** A device that cannot stop must not hang the report (each close has its own timeout too). */
const STOP_TIMEOUT_MS = 15_000;

export interface FleetInput {
  plan: SoakPlan;
  cloud: SoakCloud;
  scanner: SecretScanner;
  ledger: DeliveryLedger;
  backoffAudit: BackoffAudit;
  /** Where durable outboxes go (one directory per device); undefined: in-memory outboxes. */
  dataDir: string | undefined;
  startedAt: number;
}

export function soakRegistrationIds(devices: number): string[] {
  return Array.from({ length: devices }, (_, i) => `soak-${i}`);
}

export class Fleet {
  readonly tracks: Track[] = [];
  /** Counts per `previous→value`, the whole fleet. */
  readonly transitions: Record<string, number> = {};
  private producing = false;

  constructor(private readonly input: FleetInput) {
    const { plan, cloud, scanner, ledger, dataDir, startedAt } = input;
    const logger = createLogger({ level: 'debug', destination: { write: (line: string) => scanner.scan(line, 'log') } });
    for (const [index, registrationId] of soakRegistrationIds(plan.options.devices).entries()) {
      // Half the fleet holds the group key, half only its derived device key: both must stay secret.
      const credential = index % 2 === 0 ? { groupKey: cloud.info.groupKey } : { deviceKey: cloud.deviceKey(registrationId) };
      const device = createDevice({
        idScope: cloud.info.idScope,
        registrationId,
        ...credential,
        modelId: 'dtmi:Sample:Failover;1',
        provisioningHost: cloud.info.provisioningHost,
        ca: cloud.info.ca,
        policy: plan.policyInput,
        seed: seedFrom(`${String(plan.options.seed)}:${index}`),
        keepaliveSeconds: plan.keepaliveSeconds,
        publishTimeoutSeconds: plan.publishTimeoutSeconds,
        connectTimeoutMs: plan.connectTimeoutMs,
        provisionTimeoutMs: plan.provisionTimeoutMs,
        closeTimeoutMs: 2000,
        logger,
        ...(dataDir ? { dataDir: join(dataDir, registrationId) } : {}),
      });
      const track: Track = {
        index,
        registrationId,
        device,
        state: 'Idle',
        connectedSince: null,
        attempts: [],
        losses: [],
        shortSessions: 0,
        connects: [],
        disconnects: [],
        userCommands: [],
        accepted: 0,
        rejected: 0,
        failedRules: [],
        recent: [],
      };
      device.on('state', (change) => this.onState(track, change));
      device.on('dropped', (message) =>
        ledger.drop(message, (reason, detail) => `${registrationId} +${Date.now() - startedAt} ms: ${reason}${detail ? ` (${detail.slice(0, 300)})` : ''}`),
      );
      device.on('delivered', (messageId) => ledger.delivered(messageId));
      this.tracks.push(track);
    }
  }

  /** Starts every device; resolves with the boot time once all are Connected, throws after the boot timeout. */
  async boot(): Promise<number> {
    const { bootTimeoutMs } = this.input.plan;
    const bootStart = Date.now();
    for (const t of this.tracks) t.device.start();
    const booted = await until(() => this.tracks.every((t) => t.state === 'Connected'), bootTimeoutMs, 100);
    const bootMs = Date.now() - bootStart;
    this.input.plan.log(`boot: ${this.connectedCount()}/${this.tracks.length} connected in ${bootMs} ms`);
    if (!booted) throw new Error(`boot: not every device connected within ${bootTimeoutMs} ms`);
    return bootMs;
  }

  /** Each device sends one message per interval, the fleet's first sends spread over one interval. */
  startTelemetry(timers: RunTimers): void {
    const { telemetryIntervalMs } = this.input.plan;
    this.producing = true;
    for (const t of this.tracks) {
      let n = 0;
      const send = () => {
        if (!this.producing) return;
        t.device.sendTelemetry({ device: t.index, n: n++, temp: 20 + (n % 10) / 10 }).then(
          ({ messageId }) => {
            this.input.ledger.accept(messageId);
            t.accepted++;
          },
          (error: Error) => {
            t.rejected++;
            this.input.ledger.reject((error as { reason?: string }).reason ?? error.name);
            this.input.scanner.scan(error.message, 'error');
          },
        );
      };
      timers.timeout(() => {
        send();
        timers.interval(send, telemetryIntervalMs);
      }, Math.floor((t.index * telemetryIntervalMs) / this.tracks.length));
    }
  }

  stopTelemetry(): void {
    this.producing = false;
  }

  /**
   * The quiet period after the faults. With `endQuietWhenHealthy`, it ends once the fleet has been
   * healthy for `settleMs`: every device Connected and no accepted message waiting long for its
   * PUBACK (a stalled session keeps its messages pending, so it cannot look healthy).
   */
  async quiet(settleMs: number): Promise<void> {
    const { quietMs, options } = this.input.plan;
    if (!options.endQuietWhenHealthy) return sleep(quietMs);
    let healthySince: number | null = null;
    await until(() => {
      const now = Date.now();
      const healthy = this.tracks.every((t) => t.state === 'Connected') && !this.input.ledger.hasWaitingLongerThan(HEALTHY_PUBACK_WAIT_MS, now);
      if (!healthy) healthySince = null;
      else healthySince ??= now;
      return healthySince !== null && now - healthySince >= settleMs;
    }, quietMs, 100);
  }

  /** Waits (bounded) for every outbox to empty and every accepted message to arrive; resolves with the time taken. */
  async drain(): Promise<number> {
    const drainStart = Date.now();
    await until(
      () => this.tracks.every((t) => t.device.outboxStats().count === 0) && this.input.ledger.everyPendingArrived(),
      this.input.plan.drainTimeoutMs,
      200,
    );
    return Date.now() - drainStart;
  }

  endStates(): EndState[] {
    return this.tracks.map((t) => ({ state: t.state, connectedSince: t.connectedSince }));
  }

  /** Scans the final snapshots (part of what must not leak), then stops every device, bounded. */
  async stop(onError: (error: Error) => void): Promise<void> {
    this.producing = false;
    for (const t of this.tracks) {
      try {
        this.input.scanner.scan(JSON.stringify(t.device.actor.getPersistedSnapshot()), 'snapshot');
      } catch (error) {
        onError(error as Error);
      }
    }
    let guard: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(this.tracks.map((t) => t.device.stop())),
      new Promise<void>((resolve) => (guard = setTimeout(resolve, STOP_TIMEOUT_MS))),
    ]);
    clearTimeout(guard);
  }

  /** A user command: sends device n to DPS and notes it (user commands widen some bounds). */
  reprovision(index: number): void {
    const t = this.tracks[index]!;
    t.userCommands.push(Date.now());
    t.device.reprovision();
  }

  connectedCount(): number {
    return this.tracks.filter((t) => t.state === 'Connected').length;
  }

  /** Messages in all outboxes (a closed outbox counts 0). */
  queuedMessages(): number {
    return this.tracks.reduce((n, t) => n + (queuedIn(t.device) ?? 0), 0);
  }

  private onState(track: Track, change: StateChange): void {
    const now = Date.now();
    const ctx = track.device.actor.getSnapshot().context;
    const key = `${change.previous}→${change.value}`;
    track.state = change.value;
    this.transitions[key] = (this.transitions[key] ?? 0) + 1;
    recordOnTimeline(track, change, ctx, now, this.input.plan.policy.stableConnectionMs);
    // retryAt is the device's machine time: the audit reads the same clock (`now` is the cloud's wall time).
    this.input.backoffAudit.onTransition(track.registrationId, change, ctx, monotonicNow(systemClock));
    track.recent.push(describeTransition(change, ctx, now, this.input.startedAt));
    if (track.recent.length > RECENT_TRANSITIONS) track.recent.shift();
    const { scanner } = this.input;
    scanner.scan(JSON.stringify(change), 'event');
    scanner.scan(JSON.stringify(track.device.actor.getPersistedSnapshot()), 'snapshot');
    if (ctx.lastError) scanner.scan(ctx.lastError.message, 'error');
  }
}

/** Outbox size, or null once the outbox is closed. */
export function queuedIn(device: Device): number | null {
  try {
    return device.outboxStats().count;
  } catch {
    return null;
  }
}

function recordOnTimeline(track: Track, change: StateChange, ctx: DeviceSnapshot['context'], now: number, stableConnectionMs: number): void {
  if (change.previous === 'Connected') track.disconnects.push(now);
  if (change.previous === 'Connected' && !USER_EVENTS.has(change.event)) {
    // Only a connection that lasted is a success that restarts the curves (the device's own
    // rule, policy.stableConnectionMs); a shorter session is the next attempt on the curve, so
    // a flapping hub earns no extra attempts in the rate bounds.
    if (track.connectedSince !== null && now - track.connectedSince >= stableConnectionMs) track.losses.push(now);
    else track.shortSessions++;
  }
  if (ATTEMPT_STATES.has(change.value)) track.attempts.push(now);
  if (change.value === 'Connected') {
    track.connectedSince = now;
    track.connects.push(now);
  }
  if (change.value === 'Failed') track.failedRules.push(ctx.lastError?.rule ?? 'unknown');
}

/** One line of a device's recent timeline: times relative to the run's start. */
function describeTransition(change: StateChange, ctx: DeviceSnapshot['context'], now: number, startedAt: number): string {
  const e = ctx.lastError;
  return (
    `+${now - startedAt} ${change.previous}→${change.value} on ${change.event}` +
    (change.value === 'BackingOff' ? ` delay ${Math.round(ctx.delayMs ?? 0)} retryAt +${(ctx.retryAt ?? 0) - startedAt} step ${ctx.retryStep}` : '') +
    (e && (change.value === 'BackingOff' || change.value === 'Reprovisioning' || change.value === 'Failed') ? ` [${e.rule}/${e.errorClass} at +${e.at - startedAt}: ${e.message.slice(0, 120)}]` : '') +
    (change.hubHost ? ` hub ${change.hubHost}` : '')
  );
}
