/**
 * How the device reads the service's time from a Date header, and when a refusal is retried.
 */
import pino from 'pino';
import { PROBE_INTERVAL_MS, ServiceTime, withServiceTime } from '../../src/actors/service-time';
import type { Clock } from '../../src/clock';

/** A clock that moves only when told (no timers are needed here). */
class ManualClock implements Clock {
  constructor(private nowMs: number) {}
  now(): number {
    return this.nowMs;
  }
  advance(ms: number): void {
    this.nowMs += ms;
  }
  setTimeout(): unknown {
    throw new Error('not used');
  }
  clearTimeout(): void {}
}

const silent = pino({ level: 'silent' });
const refused = { rule: 'dps-unauthorized' };

function at(epochMs: number): { clock: ManualClock; time: ServiceTime } {
  const clock = new ManualClock(epochMs);
  return { clock, time: new ServiceTime(clock, silent) };
}

test('a Date 3 h ahead, answered within 200 ms: the offset is 3 h give or take the header\'s second', () => {
  const { clock, time } = at(Date.UTC(2026, 0, 1, 9, 0, 0));
  const sentAt = clock.now();
  const header = new Date(Date.UTC(2026, 0, 1, 12, 0, 0, 100)).toUTCString(); // whole seconds: 12:00:00
  expect(time.observe(header, sentAt, sentAt + 200)).toBe(true);
  expect(Math.abs(time.offsetMs - 3 * 3600_000)).toBeLessThanOrEqual(1000);
  expect(time.version).toBe(1);
  expect(time.expiryIn(3600)).toBe(Math.floor((clock.now() + time.offsetMs) / 1000) + 3600);
});

test.each([
  ['within the tolerance', 45_000],
  ['ahead within the tolerance', -45_000],
])('a skew %s is not adopted', (_what, skewMs) => {
  const { clock, time } = at(Date.UTC(2026, 0, 1));
  expect(time.observe(new Date(clock.now() + skewMs).toUTCString(), clock.now(), clock.now())).toBe(false);
  expect(time.offsetMs).toBe(0);
  expect(time.version).toBe(0);
});

test.each([undefined, '', 'yesterday', new Date(Date.UTC(2300, 0, 1)).toUTCString()])('an unusable Date (%p) changes nothing', (header) => {
  const { clock, time } = at(Date.UTC(2026, 0, 1));
  expect(time.observe(header, clock.now(), clock.now())).toBe(false);
  expect(time.offsetMs).toBe(0);
});

test('a clock that came right again goes back to no offset', () => {
  const { clock, time } = at(Date.UTC(2026, 0, 1));
  time.observe(new Date(clock.now() + 7200_000).toUTCString(), clock.now(), clock.now());
  expect(time.offsetMs).toBeGreaterThan(0);
  expect(time.observe(new Date(clock.now()).toUTCString(), clock.now(), clock.now())).toBe(true);
  expect(time.offsetMs).toBe(0);
});

test('withServiceTime: a refusal is retried once only when the time changed; the probe is rate-limited', async () => {
  const { clock, time } = at(Date.UTC(2026, 0, 1));
  let attempts = 0;
  const failing = async () => {
    attempts++;
    throw refused;
  };
  const probeMovesClock = async () => time.observe(new Date(clock.now() + 7200_000).toUTCString(), clock.now(), clock.now());
  await expect(withServiceTime(time, failing, probeMovesClock)).rejects.toBe(refused);
  expect(attempts).toBe(2); // the probe found a skew: tried again, refused again
  let probes = 0;
  const probeNoChange = async () => probes++;
  await expect(withServiceTime(time, failing, probeNoChange)).rejects.toBe(refused);
  expect(probes).toBe(0); // within PROBE_INTERVAL_MS of the last probe
  expect(attempts).toBe(3);
  clock.advance(PROBE_INTERVAL_MS);
  await expect(withServiceTime(time, failing, probeNoChange)).rejects.toBe(refused);
  expect(probes).toBe(1);
  expect(attempts).toBe(4); // probed, nothing changed: not retried
  await expect(withServiceTime(time, async () => Promise.reject({ rule: 'socket-refused' }), probeNoChange)).rejects.toEqual({ rule: 'socket-refused' });
  expect(probes).toBe(1); // not a refusal of the token: no probe
});

test('the probe spacing is machine time: a wall clock stepped back 6 h (what the probe is for) does not hold the next probe back', () => {
  let monotonicMs = 0;
  let wallMs = Date.UTC(2026, 0, 1, 12);
  const clock: Clock = {
    now: () => wallMs,
    monotonicNow: () => monotonicMs,
    setTimeout: () => {
      throw new Error('not used');
    },
    clearTimeout: () => undefined,
  };
  const time = new ServiceTime(clock, silent);
  expect(time.claimProbe()).toBe(true);
  wallMs -= 6 * 3600_000;
  monotonicMs += PROBE_INTERVAL_MS - 1;
  expect(time.claimProbe()).toBe(false);
  monotonicMs += 1;
  expect(time.claimProbe()).toBe(true);
  wallMs += 7 * 3600_000; // a step forward does not let one through early either
  expect(time.claimProbe()).toBe(false);
});
