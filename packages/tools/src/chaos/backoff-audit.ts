/**
 * The device side of the retry policy, checked on every transition as it happens: each delay
 * chosen on entering BackingOff against the policy's lower bound and maxBackoff, and each timed
 * exit from BackingOff against its retryAt.
 */
import type { DeviceSnapshot, StateChange } from 'hubstate';
import type { RetryPolicy } from 'hubstate';
import { policyLowerBoundMs, type Bound } from './bounds';

/** Timers may fire this early (rounding) without it being an early retry. */
export const TIMER_TOLERANCE_MS = 2;
const MAX_SAMPLES = 50;

interface OpenBackoff {
  retryAt: number;
  delayMs: number;
}

export interface BackoffFigures {
  entries: number;
  exempt: number;
  maxBackoffMs: number;
  maxBackoffFormula: string;
  longestDelayMs: number;
  minMarginOverPolicyMs: number | null;
  minRetrySlackMs: number | null;
  delayViolations: string[];
  earlyRetries: string[];
  byRule: Record<string, number>;
}

export class BackoffAudit {
  /** BackingOff entries. */
  entries = 0;
  /** Left early on a user command: not timed, so not checked against retryAt. */
  exempt = 0;
  minRetrySlackMs = Infinity;
  minDelayMarginMs = Infinity;
  longestDelayMs = 0;
  readonly delayViolations: string[] = [];
  readonly earlyRetries: string[] = [];
  private readonly byRule: Record<string, number> = {};
  /** Per device, the BackingOff it is in. */
  private readonly open = new Map<string, OpenBackoff>();

  constructor(
    private readonly policy: RetryPolicy,
    private readonly backoffMax: Bound,
  ) {}

  onTransition(registrationId: string, change: StateChange, context: DeviceSnapshot['context'], now: number): void {
    if (change.previous === 'BackingOff') this.leave(registrationId, change, now);
    if (change.value === 'BackingOff') this.enter(registrationId, change, context);
  }

  private leave(registrationId: string, change: StateChange, now: number): void {
    const backoff = this.open.get(registrationId);
    if (!backoff) return;
    this.open.delete(registrationId);
    if (!change.event.startsWith('xstate.done.actor.')) {
      this.exempt++;
      return;
    }
    const slack = now - backoff.retryAt;
    this.minRetrySlackMs = Math.min(this.minRetrySlackMs, slack);
    if (slack < -TIMER_TOLERANCE_MS && this.earlyRetries.length < MAX_SAMPLES) {
      this.earlyRetries.push(`${registrationId}: retried ${-slack} ms before retryAt (delay ${Math.round(backoff.delayMs)} ms)`);
    }
  }

  private enter(registrationId: string, change: StateChange, ctx: DeviceSnapshot['context']): void {
    const failure = ctx.lastError;
    if (!failure || ctx.delayMs === null || ctx.retryAt === null) return;
    this.entries++;
    this.byRule[failure.rule] = (this.byRule[failure.rule] ?? 0) + 1;
    // A failed registration that goes back to the old hub is still a DPS plan (dpsAttempts).
    const hubPlan = ctx.retryStep === 'Connecting' && failure.phase !== 'dps';
    const attempt = hubPlan ? ctx.hubAttempts : ctx.dpsAttempts;
    // The wait before a status lookup is the first-retry spread, whatever the loss: no floor
    // (it is DPS that is asked, not the hub that refused).
    const lower =
      ctx.retryStep === 'CheckingAssignment'
        ? 0
        : policyLowerBoundMs(this.policy, {
            errorClass: failure.errorClass,
            attempt,
            afterLoss: change.previous === 'Connected',
            ...(failure.retryAfterMs !== undefined ? { retryAfterMs: failure.retryAfterMs } : {}),
            ...(failure.minDelayMs !== undefined ? { minDelayMs: failure.minDelayMs } : {}),
          });
    this.minDelayMarginMs = Math.min(this.minDelayMarginMs, ctx.delayMs - lower);
    this.longestDelayMs = Math.max(this.longestDelayMs, ctx.delayMs);
    const problems: string[] = [];
    if (ctx.delayMs < lower - 1e-6) problems.push(`delay ${ctx.delayMs.toFixed(1)} ms < policy minimum ${lower.toFixed(1)} ms`);
    if (ctx.delayMs > this.backoffMax.valueMs + 1e-6) problems.push(`delay ${ctx.delayMs.toFixed(1)} ms > maxBackoff ${this.backoffMax.valueMs} ms`);
    if (Math.abs(ctx.retryAt - (failure.at + ctx.delayMs)) > 1) problems.push(`retryAt ≠ failure.at + delay`);
    if (problems.length > 0 && this.delayViolations.length < MAX_SAMPLES) {
      this.delayViolations.push(`${registrationId} (${failure.rule}, ${failure.errorClass}, attempt ${attempt}): ${problems.join('; ')}`);
    }
    this.open.set(registrationId, { retryAt: ctx.retryAt, delayMs: ctx.delayMs });
  }

  figures(): BackoffFigures {
    return {
      entries: this.entries,
      exempt: this.exempt,
      maxBackoffMs: this.backoffMax.valueMs,
      maxBackoffFormula: this.backoffMax.formula,
      longestDelayMs: this.longestDelayMs,
      minMarginOverPolicyMs: Number.isFinite(this.minDelayMarginMs) ? this.minDelayMarginMs : null,
      minRetrySlackMs: Number.isFinite(this.minRetrySlackMs) ? this.minRetrySlackMs : null,
      delayViolations: this.delayViolations,
      earlyRetries: this.earlyRetries,
      byRule: this.byRule,
    };
  }
}
