/**
 * The toolkit's own guarantees: a path that fails explains itself (path, step, what was expected,
 * what happened, the device's log lines) instead of throwing, a fresh local cloud is started and
 * stopped when none is given, and the paths are deterministic.
 */
import { createDevice, REPROVISION_COMMAND } from 'hubstate';
import { EXPECTED_LEG, generateFailoverPaths, runFailoverPath, type FailoverPath } from 'hubstate-testing';

const dropPath = (): FailoverPath => generateFailoverPaths({ depth: 1, refusalCodes: [3] }).find((p) => p.name === 'DROP')!;

test('the same options give the same paths and seeds; refusal codes other than 3 and 5 are refused', () => {
  expect(generateFailoverPaths({ seed: 7 })).toEqual(generateFailoverPaths({ seed: 7 }));
  expect(generateFailoverPaths({ seed: 7 })[0]!.seed).toBe(7);
  expect(() => generateFailoverPaths({ refusalCodes: [4 as 3] })).toThrow(/refusalCodes/);
  expect(() => generateFailoverPaths({ refusalCodes: [] })).toThrow(/refusalCodes/);
});

test("a failed invariant fails the report with the path, the step and the invariant's words, and the device's log lines", async () => {
  const report = await runFailoverPath(dropPath(), {
    device: (connection) => createDevice({ ...connection }),
    invariants: [{ name: 'fan acknowledged', check: ({ fault, step }) => `not after ${fault} (step ${step})` }],
  });
  expect(report.ok).toBe(false);
  expect(report.failures[0]).toBe("DROP, step 1 (DROP): invariant 'fan acknowledged': not after DROP (step 0)");
  expect(report.steps).toHaveLength(1);
  expect(report.steps[0]!.states.join(' ')).toMatch(new RegExp(report.steps[0]!.expected));
  expect(report.logTail.length).toBeGreaterThan(0);
  expect(report.logTail.join('\n')).toContain(report.registrationId);
  // the key never reaches the log lines a report carries
  expect(report.logTail.join('\n')).not.toMatch(/SharedAccessSignature sr=|sig=[A-Za-z0-9%]/);
});

test('a device that never connects is a failed report naming what it waited for, not a thrown error', async () => {
  const report = await runFailoverPath(dropPath(), {
    // a device of another ID scope: DPS does not know it, it never connects
    device: (connection) => createDevice({ ...connection, idScope: '0ne00NOPE00' }),
    stepTimeoutMs: 3000,
  });
  expect(report.ok).toBe(false);
  expect(report.failures).toHaveLength(1);
  expect(report.failures[0]).toMatch(/^DROP: timed out after 3000 ms waiting for the device to connect \(states so far: .+\)$/);
  expect(report.steps).toEqual([]);
  expect(report.accepted).toBe(0);
});

test("the application's own faults join the model: any step may be one, the names are checked", () => {
  const names = generateFailoverPaths({ depth: 2, refusalCodes: [3], customFaults: ['REPROVISION_COMMAND'] }).map((p) => p.faults.join(' → '));
  // 6 faults possible at each of the two steps (4 always, the custom one, and FAILOVER or, once failed over, FAILBACK)
  expect(names).toHaveLength(36);
  expect(names).toEqual(expect.arrayContaining(['REPROVISION_COMMAND → FAILOVER', 'FAILOVER → REPROVISION_COMMAND', 'REPROVISION_COMMAND → REPROVISION_COMMAND']));
  expect(() => generateFailoverPaths({ customFaults: ['DROP'] })).toThrow(/not one of the model's faults/);
  expect(() => generateFailoverPaths({ customFaults: ['firmware update'] })).toThrow(/capitals/);
  expect(() => generateFailoverPaths({ customFaults: Array.from({ length: 9 }, (_, i) => `F${i}`) })).toThrow(/at most 8/);
});

test("a path of the application's own faults: the built-in Reprovision command sent by the cloud, after a dropped socket", async () => {
  const path: FailoverPath = { name: 'DROP → REPROVISION_COMMAND', faults: ['DROP', 'REPROVISION_COMMAND'], identity: 'sas', seed: 3 };
  const report = await runFailoverPath(path, {
    device: (connection) => createDevice({ ...connection }),
    customFaults: {
      REPROVISION_COMMAND: {
        inject: async ({ cloud, hub, deviceId }) => {
          const answer = await cloud.hub(hub).invokeMethod(deviceId, REPROVISION_COMMAND);
          if (answer.status !== 200) throw new Error(`the command was answered ${answer.status}`);
        },
        expectedLeg: EXPECTED_LEG.USER_REPROVISION,
      },
    },
  });
  expect(report.failures).toEqual([]);
  expect(report.steps.map((s) => [s.fault, s.states.join(' ')])).toEqual([
    ['DROP', expect.stringMatching(EXPECTED_LEG.DROP)],
    ['REPROVISION_COMMAND', 'Connected Reprovisioning Connecting Connected'],
  ]);
});

test('a recovery slower than the bound fails the step, with the time it took', async () => {
  const report = await runFailoverPath(generateFailoverPaths({ depth: 1, refusalCodes: [3] }).find((p) => p.name === 'CRASH')!, {
    device: (connection) => createDevice({ ...connection }),
    recoveryBoundMs: 1, // a crashed hub is down for two failed reconnects: never within 1 ms
  });
  expect(report.ok).toBe(false);
  expect(report.failures).toEqual([expect.stringMatching(/^CRASH, step 1 \(CRASH\): recovered in \d+ ms, over the bound of 1 ms$/)]);
  expect(report.steps[0]!.recoveryMs).toBeGreaterThan(1);
});

test('a fault that is neither the model\'s nor given is a failed report naming it', async () => {
  const report = await runFailoverPath({ name: 'UNKNOWN', faults: ['FIRMWARE_UPDATE'], identity: 'sas', seed: 4 }, { device: (connection) => createDevice({ ...connection }) });
  expect(report.ok).toBe(false);
  expect(report.failures).toEqual(['UNKNOWN: FIRMWARE_UPDATE: no such fault (give it in customFaults)']);
});

test("a factory that ignores the connection's registration id is a failed report saying so, not 'messages never arrived'", async () => {
  const report = await runFailoverPath(dropPath(), {
    device: (connection) => createDevice({ ...connection, registrationId: 'my-own-id' }),
    stepTimeoutMs: 3000,
  });
  expect(report.ok).toBe(false);
  expect(report.failures).toEqual([
    expect.stringMatching(/^DROP: the device's registration id is my-own-id, not the connection's path-\d+-\w+-\d+: spread the connection into createDevice's options \(delivery is checked and faults are injected by it\)$/),
  ]);
});
