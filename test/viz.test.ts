/**
 * The committed pictures in visualizations/ must be what the machine generates now
 * (regenerate with `npm run viz`).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deviceMachine } from '../machines/device.machine';
import { faultModel } from 'hubstate-testing';
import { allStateNodes, allTransitions } from './support/model';
import { describeMachine, shortEventName, toDot, toMermaid } from 'hubstate-tools/viz/render';

const root = join(__dirname, '..');
const committed = (name: string) => readFileSync(join(root, 'visualizations', name), 'utf8');
const stateNames = allStateNodes(deviceMachine).filter((node) => node.type !== 'compound').map((node) => node.key);
/** States that group others (Active): a cluster with a pseudo-state for their own transitions. */
const compoundNames = allStateNodes(deviceMachine).filter((node) => node.type === 'compound').map((node) => node.key);
const REGENERATE = 'visualizations/ is out of date with machines/device.machine.ts: run `npm run viz` and commit it';

/**
 * jest's module sandbox cannot run the ESM-only Graphviz WASM package (dynamic import needs
 * --experimental-vm-modules), so the SVG is rendered in a child Node process, with the same calls
 * as src/viz/write.ts `renderSvg`.
 */
function renderSvgInChild(dot: string): string {
  const script =
    "import('@hpcc-js/wasm-graphviz').then(async ({ Graphviz }) => {" +
    "  let dot = ''; for await (const chunk of process.stdin) dot += chunk;" +
    "  process.stdout.write((await Graphviz.load()).dot(dot, 'svg'));" +
    '});';
  return execFileSync(process.execPath, ['-e', script], { cwd: root, input: dot, encoding: 'utf8', maxBuffer: 16 << 20 });
}

describe("hubstate-testing's fault model is drawn too", () => {
  test('visualizations/fault-model.{mmd,dot,svg} are what the fault model generates now', () => {
    expect({ file: 'fault-model.mmd', content: committed('fault-model.mmd') }).toEqual({ file: 'fault-model.mmd', content: toMermaid(faultModel) });
    expect({ file: 'fault-model.dot', content: committed('fault-model.dot') }).toEqual({ file: 'fault-model.dot', content: toDot(faultModel) });
    if (committed('fault-model.svg') !== renderSvgInChild(toDot(faultModel))) throw new Error(REGENERATE);
  });

  test('a fault handled in place names its action, and the eventless end of a path is drawn', () => {
    const mmd = committed('fault-model.mmd');
    expect(mmd).toContain('Connected --> Connected : FAILOVER [notFailedOver] / failOver');
    expect(mmd).toContain('Connected --> Done : [pathComplete]');
    expect(mmd).not.toContain('(ignored)');
  });
});

describe('visualizations generated from the machine', () => {
  test('visualizations/device.mmd is exactly what toMermaid generates now', () => {
    expect({ file: 'device.mmd', content: committed('device.mmd') }).toEqual({ file: 'device.mmd', content: toMermaid(deviceMachine) });
  });

  test('visualizations/device.dot is exactly what toDot generates now', () => {
    expect({ file: 'device.dot', content: committed('device.dot') }).toEqual({ file: 'device.dot', content: toDot(deviceMachine) });
  });

  test('visualizations/device.svg is the current DOT rendered by Graphviz (deterministic)', () => {
    const svg = committed('device.svg');
    const fresh = renderSvgInChild(toDot(deviceMachine));
    if (svg !== fresh) throw new Error(REGENERATE);
    for (const name of stateNames) expect(svg).toContain(`<title>${name}</title>`);
    for (const name of compoundNames) expect(svg).toContain(`<title>cluster_${name}</title>`);
  });

  test('every state appears in every picture; every transition appears as an edge', () => {
    const mmd = committed('device.mmd');
    const dot = committed('device.dot');
    for (const name of stateNames) {
      expect(mmd).toMatch(new RegExp(`^\\s+${name}\\b`, 'm'));
      expect(dot).toContain(`"${name}" [label="${name}`);
    }
    expect(compoundNames).toEqual(['Active']);
    for (const name of compoundNames) {
      expect(mmd).toMatch(new RegExp(`^\\s+state ${name} \\{\\n\\s+state "any ${name} state" as ${name}_any$`, 'm'));
      expect(dot).toContain(`subgraph "cluster_${name}" {\n    label="${name}";\n    "${name}" [label="any ${name} state", style=dashed];`);
    }
    expect(mmd).toContain('[*] --> Idle');
    expect(mmd).toContain('Stopped --> [*]');
    // One edge per transition definition (each guarded branch), plus the initial arrow in DOT.
    const transitions = allTransitions(deviceMachine).length;
    expect(describeMachine(deviceMachine).edges).toHaveLength(transitions);
    expect(mmd.split('\n').filter((l) => / --> /.test(l) && !l.includes('[*]'))).toHaveLength(transitions);
    expect(dot.split('\n').filter((l) => / -> /.test(l) && !l.includes('__initial'))).toHaveLength(transitions);
  });

  test('labels: short event names, guards with their constant params, else branches', () => {
    expect(shortEventName('xstate.done.actor.openHub')).toBe('done: openHub');
    expect(shortEventName('xstate.error.actor.openHub')).toBe('error: openHub');
    expect(shortEventName('xstate.after.1000.device.BackingOff')).toBe('after 1000');
    const dot = toDot(deviceMachine);
    // DOT puts the guard on a line of its own (legibility: narrower ranks); Mermaid keeps one line.
    expect(dot).toContain('"Connecting" -> "Failed" [label="error: openHub\\n[isFatal]"]');
    expect(dot).toContain('"BackingOff" -> "Connecting" [label="done: waitUntil\\n[retryStepIs Connecting]"]');
    expect(dot).toContain('"Idle" -> "Provisioning" [label="START\\n[else]"]');
    expect(dot).toContain('"Connected" -> "Connected" [label="HUB_LOST\\n[isStaleEpoch] (ignored)", style=dashed]');
    // Transitions declared once on Active start from its "any Active state" pseudo-state.
    expect(dot).toContain('"Active" -> "Disconnecting" [label="STOP"]');
    expect(toMermaid(deviceMachine)).toContain('Active_any --> Reprovisioning : REPROVISION');
    // Mermaid ends a label at ':' — the renderer uses a look-alike.
    expect(toMermaid(deviceMachine)).toContain('Connecting --> Failed : error\u02F8 openHub [isFatal]');
    expect(toMermaid(deviceMachine).split('\n').every((line) => !/ : .*[:;]/.test(line))).toBe(true);
  });

  test('the output is deterministic', () => {
    expect(toMermaid(deviceMachine)).toBe(toMermaid(deviceMachine));
    expect(toDot(deviceMachine)).toBe(toDot(deviceMachine));
  });
});
