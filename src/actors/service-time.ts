/**
 * The service's time, as the device learns it: a SAS token carries its expiry in the signer's
 * clock, so a device whose clock is more than a token's lifetime behind (booted before NTP, a dead
 * RTC battery) signs tokens that are already expired, and DPS and the hub refuse them as if the
 * key were wrong. DPS's HTTPS answers carry a `Date` header (the status lookup's, even a 401's):
 * from it the device measures the skew and signs every token with the service's time instead.
 *
 * Small skews are ignored (`toleranceMs`): a token lives an hour, and `Date` has whole seconds.
 */
import { SharedAccessSignature } from 'azure-iot-common';
import { monotonicNow, type Clock } from '../clock';
import { isKeyRefusal } from './credentials';
import type { PartLogger } from '../logger';

/** A skew below this is not corrected: tokens live minutes to hours, `Date` has whole seconds. */
export const SKEW_TOLERANCE_MS = 60_000;
/** The service's time is asked for (one status lookup) at most this often. */
export const PROBE_INTERVAL_MS = 10 * 60_000;
/** A skew beyond this is not believed (an answer from something that is not DPS). */
const MAX_SKEW_MS = 100 * 365 * 86_400_000;

export class ServiceTime {
  private offset = 0;

  private adoptions = 0;

  private lastProbeAt: number | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly logger: PartLogger,
  ) {}

  /** Service time minus device time, ms (0 until a skew beyond the tolerance was measured). */
  get offsetMs(): number {
    return this.offset;
  }

  /** Changes each time a new skew is adopted: a refusal before a change may be the clock's fault. */
  get version(): number {
    return this.adoptions;
  }

  /** Now, in the service's time (epoch ms). */
  nowMs(): number {
    return this.clock.now() + this.offset;
  }

  /**
   * One answer's `Date` header, seen by a request sent at `sentAt` and answered at `receivedAt`
   * (device clock): the header was written in between, truncated to the second. Returns true when
   * it changed the offset.
   */
  observe(dateHeader: string | undefined, sentAt: number, receivedAt: number): boolean {
    const serviceMs = dateHeader === undefined ? NaN : Date.parse(dateHeader);
    if (!Number.isFinite(serviceMs) || receivedAt < sentAt) return false;
    const skew = Math.round(serviceMs + 500 - (sentAt + receivedAt) / 2);
    if (Math.abs(skew) > MAX_SKEW_MS || Math.abs(skew - this.offset) <= SKEW_TOLERANCE_MS) return false;
    const adopted = Math.abs(skew) <= SKEW_TOLERANCE_MS ? 0 : skew;
    const seconds = Math.round(Math.abs(skew) / 1000);
    this.logger.warn(
      { skewSeconds: Math.round(skew / 1000) },
      adopted === 0
        ? 'the device clock agrees with the service again; tokens are signed with the device clock'
        : `the device clock is ${seconds} s ${skew > 0 ? 'behind' : 'ahead of'} the service's (DPS Date header); tokens are signed with the service's time`,
    );
    this.offset = adopted;
    this.adoptions++;
    return true;
  }

  /**
   * True at most once per PROBE_INTERVAL_MS: then the caller asks the service for its time. The
   * spacing is machine time: the wall clock being stepped (what a probe may reveal) moves neither.
   */
  claimProbe(): boolean {
    const now = monotonicNow(this.clock);
    if (this.lastProbeAt !== undefined && now - this.lastProbeAt < PROBE_INTERVAL_MS) return false;
    this.lastProbeAt = now;
    return true;
  }

  /** Expiry (epoch seconds, service time) of a token valid `validitySeconds` from now. */
  expiryIn(validitySeconds: number): number {
    return Math.floor(this.nowMs() / 1000) + validitySeconds;
  }
}

/**
 * The DPS registration SAS token, as the SDK's SymmetricKeySecurityClient builds it (resource
 * `{idScope}/registrations/{registrationId}`, key name `registration`, valid one hour) but
 * expiring in the service's time.
 */
export function registrationSasToken(idScope: string, registrationId: string, deviceKey: string, time: ServiceTime): string {
  return SharedAccessSignature.create(`${idScope}/registrations/${registrationId}`, 'registration', deviceKey, time.expiryIn(3600)).toString();
}

/**
 * Runs `attempt`; when the service refuses the credential and the service's time was learned (or,
 * with `probe`, is learned now) to differ from before, runs it once more: the refusal was the
 * clock's, not the key's. Otherwise the refusal stands.
 */
export async function withServiceTime<T>(time: ServiceTime, attempt: () => Promise<T>, probe?: () => Promise<unknown>): Promise<T> {
  const before = time.version;
  try {
    return await attempt();
  } catch (failure) {
    if (!isKeyRefusal(failure)) throw failure;
    if (time.version === before && probe && time.claimProbe()) await probe().catch(() => undefined);
    if (time.version === before) throw failure;
    return attempt();
  }
}
