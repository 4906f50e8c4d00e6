/**
 * Where the heap of N devices goes: two V8 heap snapshots (before and after the N devices, each
 * after a forced GC) aggregated by constructor name, the difference divided by N.
 *
 * Grouping (as DevTools' summary): objects and native objects by their constructor name, the rest
 * by node type — `(closure)`, `(string)`, `(array)` (V8-internal arrays: properties, elements,
 * contexts' backing stores), `(code)`, `(hidden)` (system objects), `(object shape)` (maps) ….
 * Closures are also counted by function name, to find whose closures they are.
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

export type HeapGroups = Map<string, { count: number; bytes: number }>;

export interface HeapAggregate {
  byConstructor: HeapGroups;
  closures: HeapGroups;
  totalBytes: number;
}

export function aggregateSnapshot(path: string): HeapAggregate {
  const data = JSON.parse(readFileSync(path, 'utf8')) as Snapshot;
  const fields = data.snapshot.meta.node_fields;
  const types = data.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const byConstructor: HeapGroups = new Map();
  const closures: HeapGroups = new Map();
  const add = (groups: HeapGroups, key: string, bytes: number) => {
    const group = groups.get(key);
    if (group) {
      group.count++;
      group.bytes += bytes;
    } else groups.set(key, { count: 1, bytes });
  };
  let totalBytes = 0;
  const { nodes, strings } = data;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt]!]!;
    const bytes = nodes[i + sizeAt]!;
    if (type === 'synthetic') continue;
    totalBytes += bytes;
    const name = strings[nodes[i + nameAt]!]!;
    const key =
      type === 'object' || type === 'native'
        ? name
        : type === 'concatenated string' || type === 'sliced string' || type === 'string'
          ? '(string)'
          : `(${type})`;
    add(byConstructor, key, bytes);
    if (type === 'closure') add(closures, name || '(anonymous)', bytes);
  }
  return { byConstructor, closures, totalBytes };
}

export interface HeapDiffRow {
  name: string;
  /** Objects added per device. */
  count: number;
  /** Bytes (self size) added per device. */
  bytes: number;
}

export interface HeapDiff {
  devices: number;
  /** Self sizes added per device, all groups. */
  totalBytesPerDevice: number;
  /** The groups that grew by more than `minBytes` per device, largest first. */
  byConstructor: HeapDiffRow[];
  closures: HeapDiffRow[];
}

function diffGroups(before: HeapGroups, after: HeapGroups, devices: number, minBytes: number): HeapDiffRow[] {
  const rows: HeapDiffRow[] = [];
  for (const [name, a] of after) {
    const b = before.get(name) ?? { count: 0, bytes: 0 };
    const bytes = (a.bytes - b.bytes) / devices;
    if (Math.abs(bytes) < minBytes) continue;
    rows.push({ name, count: Math.round(((a.count - b.count) / devices) * 100) / 100, bytes: Math.round(bytes) });
  }
  return rows.sort((x, y) => y.bytes - x.bytes);
}

export function diffSnapshots(beforePath: string, afterPath: string, devices: number, minBytes = 64): HeapDiff {
  const before = aggregateSnapshot(beforePath);
  const after = aggregateSnapshot(afterPath);
  return {
    devices,
    totalBytesPerDevice: Math.round((after.totalBytes - before.totalBytes) / devices),
    byConstructor: diffGroups(before.byConstructor, after.byConstructor, devices, minBytes),
    closures: diffGroups(before.closures, after.closures, devices, minBytes),
  };
}

/** Ours minus the raw SDK's, group by group (bytes and objects per device). */
export function subtractDiffs(ours: HeapDiff, raw: HeapDiff): HeapDiffRow[] {
  const rawBy = new Map(raw.byConstructor.map((r) => [r.name, r]));
  const names = new Set([...ours.byConstructor.map((r) => r.name), ...raw.byConstructor.map((r) => r.name)]);
  const rows: HeapDiffRow[] = [];
  for (const name of names) {
    const o = ours.byConstructor.find((r) => r.name === name) ?? { count: 0, bytes: 0 };
    const r = rawBy.get(name) ?? { count: 0, bytes: 0 };
    rows.push({ name, count: Math.round((o.count - r.count) * 100) / 100, bytes: o.bytes - r.bytes });
  }
  return rows.filter((r) => Math.abs(r.bytes) >= 64).sort((x, y) => y.bytes - x.bytes);
}
