/**
 * The toolkit's own guarantees: a path that fails explains itself (path, step, what was expected,
 * what happened, the device's log lines) instead of throwing, a fresh local cloud is started and
 * stopped when none is given, and the paths are deterministic.
 */
import { createDevice } from 'hubstate';
import { generateFailoverPaths, runFailoverPath, type FailoverPath } from 'hubstate-testing';

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
