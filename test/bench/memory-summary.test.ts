/**
 * The memory bench's summary of its rounds: every figure from its mode's median run, the ratio
 * that of the medians, each round's ratio beside it, in the table's text.
 */
import { FIXED_ALLOCATOR, summarizeMemory, type MemoryMode, type MemorySample } from '../../bench/memory';
import { renderTable } from '../../bench/report';

const KB = 1024;

function sample(mode: MemoryMode, rssKB: number, allocator?: string): MemorySample {
  return {
    mode,
    devices: 1000,
    rssPerDeviceBytes: rssKB * KB,
    heapPerDeviceBytes: (rssKB / 2) * KB,
    rssPerDeviceAt1sBytes: rssKB * KB,
    heapPerDeviceAt1sBytes: (rssKB / 2) * KB,
    rssBeforeBytes: 0,
    rssAfterBytes: 0,
    heapTotalPerDeviceBytes: (rssKB / 2) * KB,
    externalPerDeviceBytes: 0,
    arrayBuffersPerDeviceBytes: 0,
    oldSpaceFreePerDeviceBytes: (rssKB / 10) * KB,
    codeSpacePerDeviceBytes: (rssKB / 100) * KB,
    ...(allocator ? { allocator } : {}),
  };
}

// Three rounds, in the order they ran; the medians are raw 110, raw-pnp 100, connected 118.
const samples = [
  sample('idle', 30),
  sample('idle-default-logger', 32),
  sample('raw', 100),
  sample('raw-pnp', 90),
  sample('connected', 130),
  sample('raw-pnp', 100),
  sample('connected', 103),
  sample('raw', 110),
  sample('connected', 118),
  sample('raw', 120),
  sample('raw-pnp', 110),
  // Once, after the rounds: ours with nowhere to cache (a status lookup at boot).
  sample('connected-lookup', 121),
  sample('raw', 80, FIXED_ALLOCATOR),
  sample('raw-pnp', 70, FIXED_ALLOCATOR),
  sample('connected', 84, FIXED_ALLOCATOR),
];

test('figures from the median runs, the ratio of the medians, each round paired in run order', () => {
  const memory = summarizeMemory(1000, samples);
  expect(memory.connectedRssPerDeviceKB).toBe(118);
  expect(memory.rawRssPerClientKB).toBe(110);
  expect(memory.rawPnpRssPerClientKB).toBe(100);
  // The heap of the median run, not another run's.
  expect(memory.connectedHeapPerDeviceKB).toBe(59);
  expect(memory.connectedOverRaw).toBe(1.073);
  expect(memory.connectedOverRawPnp).toBe(1.18);
  expect(memory.connectedOverRawByRound).toEqual([1.3, 0.936, 0.983]);
  expect(memory.connectedOverRawPnpByRound).toEqual([1.444, 1.03, 1.073]);
  // One run each under the fixed allocator: that run.
  expect(memory.fixedAllocator?.connectedOverRaw).toBe(1.05);
  expect(memory.idleRssPerMachineKB).toBe(30);

  const row = renderTable({ memory }).split('\n').find((line) => line.startsWith('| 5 memory, N=1000 connected |'))!;
  expect(row).toContain('118 KB RSS/device (heap 59 KB), 1.07× raw (ratio of the medians of 3 rounds; each round: 1.30, 0.94, 0.98×)');
  // The old space's free space and the code space, of the same median runs.
  expect(row).toContain("(of which the old space's 11.8 KB), code space 1.2 KB");
  expect(row).toContain("raw SDK client: 110 KB RSS (heap 55 KB); native 55 KB, heap free 0 KB (of which the old space's 11 KB), code space 1.1 KB");
  expect(row).toMatch(/\*\*no\*\*/);
  // Its own row, against the raw median, not in the connected figures.
  expect(memory.connectedLookupOverRaw).toBe(1.1);
  const lookupRow = renderTable({ memory }).split('\n').find((line) => line.includes('nowhere to cache'))!;
  expect(lookupRow).toContain('121 KB RSS/device (heap 60.5 KB), 1.10× raw (one run)');
});

test('without a connected-lookup run, no such row', () => {
  const memory = summarizeMemory(1000, samples.filter((s) => s.mode !== 'connected-lookup'));
  expect(memory.connectedLookupOverRaw).toBeNull();
  expect(renderTable({ memory })).not.toContain('nowhere to cache');
});
