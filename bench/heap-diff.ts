/**
 * Where the heap of N devices goes: two V8 heap snapshots (before and after the N devices, each
 * after a forced GC) aggregated by constructor name, the difference divided by N.
 *
 * Grouping (as DevTools' summary): objects and native objects by their constructor name, the rest
 * by node type — `(closure)`, `(string)`, `(array)` (V8-internal arrays: properties, elements,
 * contexts' backing stores), `(code)`, `(hidden)` (system objects), `(object shape)` (maps) ….
 * Closures are also counted by function name, to find whose closures they are.
 *
 * Owners (`ownersOfGrowth`): the same growth charged to the objects that hold it, such as the
 * XState actors, the SDK client, the PnP session, rather than to closures and arrays.
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

const readSnapshot = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Snapshot;

export type HeapGroups = Map<string, { count: number; bytes: number }>;

export interface HeapAggregate {
  byConstructor: HeapGroups;
  closures: HeapGroups;
  totalBytes: number;
}

export function aggregateSnapshot(data: Snapshot): HeapAggregate {
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
  /** The same growth by the object that holds it (ownersOfGrowth). */
  owners: HeapDiffRow[];
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

export function diffSnapshots(beforePath: string, afterPath: string, devices: number, ownerRoot: string, minBytes = 64): HeapDiff {
  const beforeData = readSnapshot(beforePath);
  const before = aggregateSnapshot(beforeData);
  const beforeIds = nodeIds(beforeData);
  const afterData = readSnapshot(afterPath);
  const after = aggregateSnapshot(afterData);
  return {
    devices,
    totalBytesPerDevice: Math.round((after.totalBytes - before.totalBytes) / devices),
    byConstructor: diffGroups(before.byConstructor, after.byConstructor, devices, minBytes),
    closures: diffGroups(before.closures, after.closures, devices, minBytes),
    owners: ownersOfGrowth(beforeIds, afterData, ownerRoot, devices, minBytes),
  };
}

function nodeIds(data: Snapshot): Set<number> {
  const fields = data.snapshot.meta.node_fields;
  const width = fields.length;
  const idAt = fields.indexOf('id');
  const ids = new Set<number>();
  for (let i = 0; i < data.nodes.length; i += width) ids.add(data.nodes[i + idAt]!);
  return ids;
}

/** Constructors that hold data for others rather than own it: their contents go to whoever reaches them. */
const CONTAINERS = new Set(['Object', 'Array', 'Map', 'Set', 'WeakMap', 'WeakSet', 'Promise', 'Function', 'Buffer', 'Uint8Array', 'ArrayBuffer', 'Error']);

/**
 * The heap the N devices added, by owner: each object new in `after` (V8 keeps an object's id
 * across the snapshots of one process, so "new" is "id absent from `before`") is charged to the
 * nearest object with a class of its own on a shortest path from the `root` objects (each device's
 * `HubstateDevice`, each raw client's `Client`). Closures, contexts, plain objects and arrays have
 * no class: they go to the class that reaches them first. Weak edges are not followed, nor edges
 * into compiled code and object shapes: V8 makes those mostly once per process, for whichever
 * device ran a path first (an object whose prototype is per device, as a pino child's, gets shapes
 * of its own), and they have a row of their own, as has what no root reaches (the process's own
 * growth). The rows count objects new in `after`, not the net growth (`totalBytesPerDevice`):
 * what the devices freed of the process's earlier objects is not subtracted.
 */
export function ownersOfGrowth(beforeIds: Set<number>, data: Snapshot, root: string, devices: number, minBytes = 64): HeapDiffRow[] {
  const { node_fields: fields, node_types: nodeTypes, edge_fields: edgeFields, edge_types: edgeTypes } = data.snapshot.meta;
  const width = fields.length;
  const [typeAt, nameAt, idAt, sizeAt, edgeCountAt] = ['type', 'name', 'id', 'self_size', 'edge_count'].map((f) => fields.indexOf(f)) as [number, number, number, number, number];
  const edgeWidth = edgeFields.length;
  const [edgeTypeAt, toAt] = [edgeFields.indexOf('type'), edgeFields.indexOf('to_node')] as [number, number];
  const weak = new Set([edgeTypes[0].indexOf('weak'), edgeTypes[0].indexOf('shortcut')]);
  const objectType = nodeTypes[0].indexOf('object');
  const perProcess = new Set([nodeTypes[0].indexOf('code'), nodeTypes[0].indexOf('object shape')]);
  const { nodes, edges, strings } = data;
  const count = nodes.length / width;
  const firstEdge = new Uint32Array(count + 1);
  for (let n = 0; n < count; n++) firstEdge[n + 1] = firstEdge[n]! + nodes[n * width + edgeCountAt]! * edgeWidth;
  const isNew = (n: number) => !beforeIds.has(nodes[n * width + idAt]!);
  const classOf = (n: number) => {
    if (nodes[n * width + typeAt] !== objectType) return undefined;
    const name = strings[nodes[n * width + nameAt]!]!;
    return name && !CONTAINERS.has(name) && !name.startsWith('system /') ? name : undefined;
  };
  const owners: HeapGroups = new Map();
  const charge = (owner: string, n: number) => {
    const group = owners.get(owner);
    if (group) {
      group.count++;
      group.bytes += nodes[n * width + sizeAt]!;
    } else owners.set(owner, { count: 1, bytes: nodes[n * width + sizeAt]! });
  };
  const ownerOf = new Map<number, string>();
  let frontier: number[] = [];
  for (let n = 0; n < count; n++) {
    if (isNew(n) && nodes[n * width + typeAt] === objectType && strings[nodes[n * width + nameAt]!] === root) {
      ownerOf.set(n, root);
      frontier.push(n);
    }
  }
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const n of frontier) {
      const owner = ownerOf.get(n)!;
      charge(owner, n);
      for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e += edgeWidth) {
        if (weak.has(edges[e + edgeTypeAt]!)) continue;
        const to = edges[e + toAt]! / width;
        if (ownerOf.has(to) || !isNew(to) || perProcess.has(nodes[to * width + typeAt]!)) continue;
        ownerOf.set(to, classOf(to) ?? owner);
        next.push(to);
      }
    }
    frontier = next;
  }
  for (let n = 0; n < count; n++) {
    if (isNew(n) && !ownerOf.has(n)) charge(perProcess.has(nodes[n * width + typeAt]!) ? '(compiled code and object shapes)' : `(not reached from a ${root})`, n);
  }
  return [...owners]
    .map(([name, g]) => ({ name, count: Math.round((g.count / devices) * 100) / 100, bytes: Math.round(g.bytes / devices) }))
    .filter((r) => Math.abs(r.bytes) >= minBytes)
    .sort((x, y) => y.bytes - x.bytes);
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
