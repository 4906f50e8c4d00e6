/**
 * The fault phase: each scheduled fault injected into the local cloud at its time and reverted at
 * its end, then everything cleared. What happened to each fault is kept for the report and for
 * the audits that judge the devices against each fault's actual window.
 */
import type { SoakCloud } from './cloud';
import { describeFault, type FaultKind, type ScheduledFault } from './schedule';
import { sleep, type RunTimers } from './timing';

export interface FaultOutcome {
  id: number;
  kind: FaultKind;
  description: string;
  startedAtMs?: number;
  endedAtMs?: number;
  /** Emulator errors while injecting (e.g. a device already failed over by an overlapping fault). */
  errors: string[];
}

const MAX_ERRORS_PER_TARGET_FAULT = 20;

type Commands = SoakCloud['commands'];

export interface FaultRunnerInput {
  schedule: readonly ScheduledFault[];
  /** Registration id of device n. */
  registrationIds: readonly string[];
  /** Sends device n to DPS as its user would (a DPS fault must be met by devices). */
  reprovision: (deviceIndex: number) => void;
  timers: RunTimers;
  log: (line: string) => void;
}

export class FaultRunner {
  readonly outcomes: FaultOutcome[];
  /** When the phase started and when every fault was cleared (0: not yet). */
  phaseStart = 0;
  clearAt = 0;
  private readonly reverts = new Map<number, () => Promise<unknown>>();
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly input: FaultRunnerInput) {
    this.outcomes = input.schedule.map((f) => ({ id: f.id, kind: f.kind, description: describeFault(f), errors: [] }));
  }

  /** Runs the schedule against the cloud for `durationMs`, then reverts what is still in place and clears it. */
  async run(commands: Commands, durationMs: number): Promise<void> {
    this.phaseStart = Date.now();
    this.input.log(`faults: ${this.input.schedule.length} scheduled over ${durationMs / 1000} s`);
    for (const f of this.input.schedule) this.schedule(f, commands);
    await sleep(durationMs);
    // Faults due exactly at the end must not start after the clear-all.
    this.input.timers.clearTimeouts();
    await Promise.all([...this.running]);
    await this.clearAll(commands);
  }

  /** The fault's actual window in epoch ms, or undefined if it never started. */
  window(f: ScheduledFault): { from: number; to: number } | undefined {
    const o = this.outcomes[f.id]!;
    if (o.startedAtMs === undefined || this.phaseStart === 0) return undefined;
    const from = this.phaseStart + o.startedAtMs;
    // An instant fault (duration 0) has no end of its own: its window is its start.
    const to = f.durationMs === 0 ? from : o.endedAtMs !== undefined ? this.phaseStart + o.endedAtMs : this.clearAt || from + f.durationMs;
    return { from, to };
  }

  private schedule(f: ScheduledFault, commands: Commands): void {
    const outcome = this.outcomes[f.id]!;
    let started: Promise<void> = Promise.resolve();
    this.input.timers.timeout(() => {
      outcome.startedAtMs = Date.now() - this.phaseStart;
      started = this.inject(f, outcome, commands).catch((error: unknown) => {
        outcome.errors.push((error as Error).message);
      });
      this.keep(started);
    }, f.atMs);
    if (f.durationMs === 0) return;
    this.input.timers.timeout(() => {
      this.keep(
        started.then(async () => {
          const revert = this.reverts.get(f.id);
          this.reverts.delete(f.id);
          try {
            await revert?.();
          } catch (error) {
            outcome.errors.push((error as Error).message);
          }
          outcome.endedAtMs = Date.now() - this.phaseStart;
        }),
      );
    }, f.atMs + f.durationMs);
  }

  private keep(p: Promise<void>): void {
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
  }

  private async clearAll(commands: Commands): Promise<void> {
    for (const [id, revert] of [...this.reverts]) {
      this.reverts.delete(id);
      try {
        await revert();
      } catch (error) {
        this.outcomes[id]!.errors.push((error as Error).message);
      }
      this.outcomes[id]!.endedAtMs = Date.now() - this.phaseStart;
    }
    await commands.clearAll();
    this.clearAt = Date.now();
  }

  private async inject(f: ScheduledFault, outcome: FaultOutcome, commands: Commands): Promise<void> {
    const targets = (f.devices ?? []).map((i) => this.input.registrationIds[i]!);
    const hub = f.hub ?? -1;
    const revertWith = (revert: () => Promise<unknown>) => this.reverts.set(f.id, revert);
    // Device faults run one call per target: one that cannot apply (e.g. a device failed over by
    // an overlapping fault) is recorded and does not stop the others.
    const attempt = async (what: () => Promise<unknown>): Promise<void> => {
      try {
        await what();
      } catch (error) {
        if (outcome.errors.length < MAX_ERRORS_PER_TARGET_FAULT) outcome.errors.push((error as Error).message);
      }
    };
    const forEachTarget = (what: (id: string) => Promise<unknown>) => Promise.all(targets.map((id) => attempt(() => what(id))));
    const nudge = () => {
      for (const i of f.devices ?? []) this.input.reprovision(i);
    };
    switch (f.kind) {
      case 'hub.crash':
        await commands.hubKill(hub);
        revertWith(() => commands.hubRestart(hub));
        break;
      case 'hub.refuse3':
        await commands.hubRefuse(hub, 3);
        revertWith(() => commands.hubRefuse(hub, null));
        break;
      case 'hub.blackhole':
        await commands.hubBlackhole(hub, true);
        revertWith(() => commands.hubBlackhole(hub, false));
        break;
      case 'hub.withholdPubacks':
        await commands.hubWithholdPubacks(hub, true, f.store ?? true);
        revertWith(() => commands.hubWithholdPubacks(hub, false));
        break;
      case 'hub.connectRateLimit':
        await commands.hubConnectRateLimit(hub, f.perSec!);
        revertWith(() => commands.hubConnectRateLimit(hub, null));
        break;
      case 'dps.down':
        await commands.dpsDown();
        revertWith(() => commands.dpsUp());
        nudge();
        break;
      case 'dps.blackhole':
        await commands.dpsBlackhole(true);
        revertWith(() => commands.dpsBlackhole(false));
        nudge();
        break;
      case 'dps.throttle':
        await commands.dpsThrottle(f.retryAfterSec!);
        revertWith(() => commands.dpsThrottle(null));
        nudge();
        break;
      case 'dps.failWith':
        await commands.dpsFailWith({ status: f.status!, ...(f.retryAfterSec !== undefined ? { retryAfterSec: f.retryAfterSec } : {}) });
        revertWith(() => commands.dpsFailWith(null));
        nudge();
        break;
      case 'dps.rateLimit':
        await commands.dpsRateLimit(f.perSec!, f.retryAfterSec!);
        revertWith(() => commands.dpsRateLimit(null));
        nudge();
        break;
      case 'device.failover':
        await forEachTarget((id) => commands.failover(id, f.durationMs));
        break;
      case 'device.failback':
        await forEachTarget((id) => commands.failover(id));
        revertWith(() => forEachTarget((id) => commands.failback(id)));
        break;
      case 'device.expireTokens':
        await forEachTarget((id) => commands.expireTokens(id));
        break;
      case 'device.disable': {
        const disabled: Array<[string, string]> = [];
        await forEachTarget(async (id) => disabled.push([await commands.disableDevice(id), id]));
        revertWith(() => Promise.all(disabled.map(([hubName, id]) => attempt(() => commands.enableDevice(hubName, id)))));
        break;
      }
      case 'device.delete':
        await forEachTarget((id) => commands.deleteDevice(id));
        break;
      case 'device.disconnect':
        await forEachTarget((id) => commands.disconnectDevice(id));
        break;
      case 'device.flap':
        await commands.flap(targets, f.holdMs!);
        revertWith(() => commands.flap(targets, null));
        break;
    }
  }
}
