/**
 * The memory bench's heap attribution on real V8 snapshots: a child process builds N "devices"
 * of known parts between two snapshots, and each part's bytes must land with the class that holds
 * it, whatever closures, contexts and arrays it is made of.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diffSnapshots } from '../../bench/heap-diff';

const N = 200;

// Each Gadget holds a Part (class of its own) through a closure's context, a plain array, and a
// Map of 8 entries of its own. A large array is the Gadget's own property and, further away, a
// Holder's: it is the Gadget's (the nearer). A Stray per device is held by a global array, and
// by a Gadget only weakly: it is no Gadget's.
const CHILD = `
const { writeHeapSnapshot } = require('node:v8');
class Part { constructor(i) { this.values = [i, i + 1, i + 2]; } }
class Holder { constructor(inner) { this.inner = [[inner]]; } }
class Gadget {
  constructor(i, stray) {
    const large = new Array(1000).fill(i);
    this.holder = new Holder(large); // the longer path, listed first
    this.large = large;
    this.strayRef = new WeakRef(stray);
    const part = new Part(i);
    this.read = () => part.values;
    this.slots = [{ at: i }];
    this.table = new Map(Array.from({ length: 8 }, (_, k) => [k, { k }]));
  }
}
class Stray { constructor(i) { this.i = i; } }
globalThis.kept = []; globalThis.strays = [];
const [before, after, n] = process.argv.slice(1);
writeHeapSnapshot(before);
for (let i = 0; i < Number(n); i++) { const stray = new Stray(i); strays.push(stray); kept.push(new Gadget(i, stray)); }
writeHeapSnapshot(after);
`;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hubstate-heap-diff-'));
  execFileSync(process.execPath, ['-e', CHILD, join(dir, 'before.heapsnapshot'), join(dir, 'after.heapsnapshot'), String(N)]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('growth is charged to its holder: the Part through a closure, the Map and the arrays to the Gadget, strays apart', () => {
  const diff = diffSnapshots(join(dir, 'before.heapsnapshot'), join(dir, 'after.heapsnapshot'), N, 'Gadget', 0);
  const owner = (name: string) => diff.owners.find((row) => row.name === name);
  // One Part a device, its values array and that array's elements: reached only through the closure's context.
  expect(owner('Part')!.count).toBeCloseTo(3, 0);
  // The Gadget, its closure and context, the slots array and its object, the Map with its table and 8 entry objects.
  expect(owner('Gadget')!.count).toBeGreaterThanOrEqual(1 + 2 + 2 + 1 + 2 + 8);
  expect(owner('Gadget')!.bytes).toBeGreaterThan(owner('Part')!.bytes);
  // The large array's elements (~8 KB) on the shorter path: the Gadget's, not the Holder's.
  expect(owner('Gadget')!.bytes).toBeGreaterThan(8000);
  expect(owner('Holder')!.bytes).toBeLessThan(1000);
  // Held by the global list only: not reached from a Gadget.
  expect(owner('Stray')).toBeUndefined();
  expect(owner('(not reached from a Gadget)')!.count).toBeGreaterThanOrEqual(1);
  const byConstructor = Object.fromEntries(diff.byConstructor.map((row) => [row.name, row.count]));
  expect(byConstructor).toMatchObject({ Gadget: 1, Part: 1, Stray: 1 });
});
