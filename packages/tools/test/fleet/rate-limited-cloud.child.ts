/**
 * The local cloud of shards.test.ts in a process of its own (run from the sources through
 * test/support/ts-register.js): 2,000 TLS handshakes on each side in one event loop would make
 * the test measure a busy CPU instead of the DPS rate limit.
 */
import { FAST_DPS_POLL_SEC, serveService, startLocalCloud, type DpsMetrics } from 'hubstate-cloud';

export interface RateLimitedCloudCommands {
  metrics(): DpsMetrics;
  /** Every registration: its id and when DPS first assigned it (epoch ms). */
  registrations(): Array<{ registrationId: string; at: number }>;
  /** When each registered device first asked DPS to register it (epoch ms), throttled or not. */
  firstRequests(): number[];
}

const ratePerSec = Number(process.argv[2]);
serveService<RateLimitedCloudCommands>(async () => {
  const cloud = await startLocalCloud({ hubs: 2, dps: { rateLimitPerSec: ratePerSec, retryAfterSec: 1, pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  return {
    info: { idScope: cloud.idScope, groupKey: cloud.groupKey, provisioningHost: cloud.provisioningHost, ca: cloud.ca },
    commands: {
      metrics: () => cloud.dps.metrics(),
      registrations: () => cloud.dps.registrations().map((r) => ({ registrationId: r.registrationId, at: Date.parse(r.createdDateTimeUtc) })),
      firstRequests: () => cloud.dps.registrations().map((r) => Math.min(...cloud.dps.attempts(r.registrationId))),
    },
    stop: () => cloud.stop(),
  };
}).catch((error: unknown) => {
  process.stderr.write(`rate-limited cloud: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
// The test went away: do not linger.
process.on('disconnect', () => process.exit(0));
