/**
 * Writes the pictures of the device machine: Mermaid (GitHub renders it), DOT, and SVG rendered
 * from the DOT by Graphviz compiled to WASM (`@hpcc-js/wasm-graphviz`, no system dependency).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AnyStateMachine } from 'xstate';
import { deviceMachine } from 'hubstate';
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

/** Writes device.mmd, device.dot and device.svg into `dir`; returns the written paths. */
export async function writeVisualizations(dir = 'visualizations'): Promise<string[]> {
  const { mmd, dot, svg } = await generateVisualizations();
  await mkdir(dir, { recursive: true });
  const files: Array<[string, string]> = [
    [join(dir, 'device.mmd'), mmd],
    [join(dir, 'device.dot'), dot],
    [join(dir, 'device.svg'), svg],
  ];
  for (const [path, content] of files) await writeFile(path, content);
  return files.map(([path]) => path);
}
