/**
 * Writes the pictures of the device machine, and of hubstate-testing's fault model: Mermaid
 * (GitHub renders it), DOT, and SVG rendered from the DOT by Graphviz compiled to WASM
 * (`@hpcc-js/wasm-graphviz`, no system dependency).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AnyStateMachine } from 'xstate';
import { deviceMachine } from 'hubstate';
import { faultModel } from 'hubstate-testing';
import { toDot, toMermaid } from './render';

/** Renders DOT to SVG. Deterministic for a given DOT and package version. */
export async function renderSvg(dot: string): Promise<string> {
  // ESM-only: a real dynamic import (module nodenext keeps it one in this CommonJS file).
  const { Graphviz } = await import('@hpcc-js/wasm-graphviz');
  const graphviz = await Graphviz.load();
  return graphviz.dot(dot, 'svg');
}

export interface Visualizations {
  mmd: string;
  dot: string;
  svg: string;
}

export async function generateVisualizations(machine: AnyStateMachine = deviceMachine): Promise<Visualizations> {
  const dot = toDot(machine);
  return { mmd: toMermaid(machine), dot, svg: await renderSvg(dot) };
}

/** The machines drawn, by file name. */
export const PICTURED: ReadonlyArray<[name: string, machine: AnyStateMachine]> = [
  ['device', deviceMachine],
  ['fault-model', faultModel],
];

/** Writes <name>.mmd, .dot and .svg for each pictured machine into `dir`; returns the written paths. */
export async function writeVisualizations(dir = 'visualizations'): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const [name, machine] of PICTURED) {
    const pictures = await generateVisualizations(machine);
    for (const format of ['mmd', 'dot', 'svg'] as const) {
      const path = join(dir, `${name}.${format}`);
      await writeFile(path, pictures[format]);
      written.push(path);
    }
  }
  return written;
}
