/**
 * The status lookup through an HTTP CONNECT proxy that refuses the tunnel: https-proxy-agent hands
 * the proxy's own plain-HTTP answer to the request. Neither its status nor its Date is DPS's: the
 * lookup fails as a network problem (not as DPS refusing the key or the registration), and the
 * device's idea of the service's time is untouched.
 */
import pino from 'pino';
import { Credentials } from '../../src/actors/credentials';
import { lookupOnce, type LookupSettings } from '../../src/actors/lookup';
import { ServiceTime } from '../../src/actors/service-time';
import { NetworkPath, resolveNetworkOptions } from '../../src/actors/transport';
import { systemClock } from '../../src/clock';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import type { Failure } from '../../src/policy/types';
import { startConnectProxy, type ConnectProxy } from '../support/connect-proxy';

let cloud: LocalCloud;
let proxy: ConnectProxy;
const logger = pino({ level: 'silent' });

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'lookup-proxy', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  const dpsPort = Number(cloud.provisioningHost.split(':')[1]);
  // The proxy's clock is 3 hours behind, and it refuses the tunnel to DPS.
  proxy = await startConnectProxy({ refusePorts: [dpsPort], refusalDate: new Date(Date.now() - 3 * 3600_000).toUTCString() });
});
afterAll(async () => {
  await proxy.close();
  await cloud.stop();
});

test("a proxy's refusal is neither DPS's answer nor DPS's time", async () => {
  const serviceTime = new ServiceTime(systemClock, logger);
  const settings: LookupSettings = {
    provisioningHost: cloud.provisioningHost,
    idScope: cloud.idScope,
    credentials: new Credentials({ groupKey: { primary: cloud.groupKey, secondary: cloud.groupKey } }),
    ca: cloud.ca,
    network: new NetworkPath(resolveNetworkOptions('mqtt-ws', proxy.url, {}), logger),
    deadlineMs: 5000,
    serviceTime,
    clock: systemClock,
    logger,
  };
  const failure = (await lookupOnce(settings, 'behind-a-proxy').then(
    () => undefined,
    (error: unknown) => error,
  )) as Failure;
  expect(failure).toMatchObject({ name: 'ProxyAnswerError', errorClass: 'transient' });
  expect(failure.rule).not.toMatch(/lookup|unauthorized/);
  expect(proxy.refusedCount()).toBe(1); // not a refusal of the key: the other key was not tried
  expect(serviceTime.offsetMs).toBe(0);
  expect(serviceTime.version).toBe(0);
  expect(cloud.dps.metrics().lookupRequests).toBe(0);
});
