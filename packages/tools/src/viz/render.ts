/**
 * Pictures of a statechart, generated from the machine itself by walking `machine.root`
 * (`node.states`, `node.transitions` — which include invoke onDone/onError —, `node.invoke`,
 * `node.initial`, guards). Pure and deterministic: the order is the machine definition's order,
 * nothing depends on time or on the environment.
 */
import type { AnyStateMachine, AnyStateNode, AnyTransitionDefinition } from 'xstate';

export interface VizState {
  /** Unique id usable in Mermaid and DOT: the state key, or its path joined with `_` if the key is not unique. */
  id: string;
  /** Display name (the state key). */
  name: string;
  final: boolean;
  /** Ids of the invoked actors. */
  invokes: string[];
  /** Named entry actions. */
  entry: string[];
  /** Id of the initial child, for compound states. */
  initial: string | null;
  children: VizState[];
}

export interface VizEdge {
  source: string;
  /** The target state id; the source itself for a targetless (event-swallowing) transition. */
  target: string;
  label: string;
  /** A transition without target: the event is consumed and nothing happens. */
  targetless: boolean;
}

export interface VizGraph {
  id: string;
  initial: string | null;
  states: VizState[];
  edges: VizEdge[];
}

/** `xstate.done.actor.openHub` → `done: openHub`, `xstate.after.1000.x` → `after 1000`. */
export function shortEventName(eventType: string): string {
  let match = /^xstate\.(done|error)\.actor\.(.+)$/.exec(eventType);
  if (match) return `${match[1]}: ${match[2]}`;
  match = /^xstate\.after\.([^.]+)\./.exec(eventType);
  if (match) return `after ${match[1]}`;
  if (eventType.startsWith('xstate.done.state.')) return 'done';
  return eventType;
}

// Guard params are often functions of the event (here: the classified failure it carries). To
// show the constant part (e.g. `errorClass: 'fatal'`), evaluate them on two different probe events
// and keep the primitive values both agree on.
function probeEvent(eventType: string, variant: number) {
  const failure = {
    errorClass: variant === 0 ? 'transient' : 'throttled',
    rule: `viz-probe-${variant}`,
    phase: 'dps',
    name: 'VizProbe',
    message: 'probe',
    at: variant,
  };
  return { type: eventType, error: failure, failure, output: undefined, epoch: variant };
}

function constantParams(params: unknown, eventType: string): Array<[string, string]> {
  if (params === undefined || params === null) return [];
  const evaluate = (variant: number): Record<string, unknown> | null => {
    if (typeof params !== 'function') return params as Record<string, unknown>;
    try {
      return (params as (args: unknown) => Record<string, unknown>)({ context: {}, event: probeEvent(eventType, variant) });
    } catch {
      return null;
    }
  };
  const [a, b] = [evaluate(0), evaluate(1)];
  if (!a || !b || typeof a !== 'object') return [];
  return Object.entries(a)
    .filter(([key, value]) => ['string', 'number', 'boolean'].includes(typeof value) && b[key] === value)
    .map(([key, value]) => [key, String(value)]);
}

/** `hasAssignment`, `failureIs fatal`, `retryStepIs Connecting`; null for no guard. */
export function guardText(guard: unknown, eventType: string): string | null {
  if (guard === undefined || guard === null) return null;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'function') return guard.name || 'guard';
  if (typeof guard === 'object' && 'type' in guard) {
    const { type, params } = guard as { type: unknown; params?: unknown };
    const shown = constantParams(params, eventType);
    const text = shown.length === 1 ? shown[0][1] : shown.map(([k, v]) => `${k}=${v}`).join(', ');
    return text ? `${String(type)} ${text}` : String(type);
  }
  return 'guard';
}

function actionName(action: unknown): string | null {
  if (typeof action === 'string') return action;
  if (action && typeof action === 'object' && 'type' in action) return String((action as { type: unknown }).type);
  return null; // inline functions have no stable name
}

/** Source id of transitions defined on the machine root (they apply in every state). */
export const ANY_STATE = '__any';

// Pictures name a nested state by its key (`Connecting`, not `Active_Connecting`), as the device
// reports it; the path is needed only where a key occurs twice in the machine.
const repeatedKeysByMachine = new WeakMap<object, Set<string>>();

function repeatedKeys(root: AnyStateNode): Set<string> {
  let repeated = repeatedKeysByMachine.get(root);
  if (!repeated) {
    const seen = new Set<string>();
    repeated = new Set<string>();
    const walk = (node: AnyStateNode) => {
      for (const child of Object.values(node.states)) {
        if (seen.has(child.key)) repeated!.add(child.key);
        seen.add(child.key);
        walk(child);
      }
    };
    walk(root);
    repeatedKeysByMachine.set(root, repeated);
  }
  return repeated;
}

function idOf(node: AnyStateNode): string {
  if (!node.path.length) return ANY_STATE;
  return repeatedKeys(node.machine.root).has(node.key) ? node.path.join('_') : node.key;
}

function describeState(node: AnyStateNode): VizState {
  const children = Object.values(node.states).map(describeState);
  const initialTarget = node.initial?.target?.[0];
  return {
    id: idOf(node),
    name: node.key,
    final: node.type === 'final',
    invokes: node.invoke.map((invoke) => invoke.id),
    entry: node.entry.map(actionName).filter((n): n is string => n !== null),
    initial: initialTarget ? idOf(initialTarget) : null,
    children,
  };
}

function transitionEdges(node: AnyStateNode): VizEdge[] {
  const edges: VizEdge[] = [];
  // Eventless transitions (`always`) are drawn too, labelled by their guard alone.
  const byEvent = [...(node.transitions as Map<string, AnyTransitionDefinition[]>)];
  if (node.always?.length) byEvent.push(['', node.always]);
  for (const [eventType, definitions] of byEvent) {
    const anyGuarded = definitions.some((t) => t.guard);
    for (const t of definitions) {
      const guard = guardText(t.guard, eventType) ?? (anyGuarded ? 'else' : null);
      const label = [eventType ? shortEventName(eventType) : '', guard ? `[${guard}]` : ''].filter(Boolean).join(' ');
      const targets = t.target?.length ? t.target : null;
      if (!targets) {
        // Targetless: the event is handled in place (its actions named), or swallowed.
        const actions = (t.actions as unknown[]).map(actionName).filter((n): n is string => n !== null);
        edges.push({ source: idOf(node), target: idOf(node), label: `${label} ${actions.length ? `/ ${actions.join(', ')}` : '(ignored)'}`, targetless: true });
        continue;
      }
      for (const target of targets) edges.push({ source: idOf(node), target: idOf(target), label, targetless: false });
    }
  }
  for (const child of Object.values(node.states)) edges.push(...transitionEdges(child));
  return edges;
}

/** The states and transitions of a machine, in definition order. */
export function describeMachine(machine: AnyStateMachine): VizGraph {
  const root = machine.root;
  const rootInitial = root.initial?.target?.[0];
  return {
    id: root.id,
    initial: rootInitial ? idOf(rootInitial) : null,
    states: Object.values(root.states).map(describeState),
    // Transitions on the root apply in every state: they start from the pseudo-state ANY_STATE.
    edges: transitionEdges(root),
  };
}

function flatten(states: VizState[]): VizState[] {
  return states.flatMap((s) => [s, ...flatten(s.children)]);
}

// Mermaid's stateDiagram lexer ends a description at ':' or ';' and treats '#' as a comment.
function mermaidText(text: string): string {
  return text.replace(/:/g, '\u02F8').replace(/;/g, ',').replace(/#/g, '\u266F');
}

/** Mermaid `stateDiagram-v2` (GitHub renders it in Markdown). */
export function toMermaid(machine: AnyStateMachine): string {
  const graph = describeMachine(machine);
  const lines = ['stateDiagram-v2'];
  const sources = new Set(graph.edges.map((e) => e.source));
  // A compound state's own transitions start from a pseudo-state inside it ("any Active state"):
  // an edge from a composite to its own child is not something Mermaid lays out.
  const anyInside = (id: string) => `${id}_any`;
  const emitStates = (states: VizState[], initial: string | null, indent: string) => {
    if (initial) lines.push(`${indent}[*] --> ${initial}`);
    for (const state of states) {
      if (state.children.length) {
        lines.push(`${indent}state ${state.id} {`);
        if (sources.has(state.id)) lines.push(`${indent}  state "any ${state.name} state" as ${anyInside(state.id)}`);
        emitStates(state.children, state.initial, `${indent}  `);
        lines.push(`${indent}}`);
      }
      for (const invoke of state.invokes) lines.push(`${indent}${state.id} : ${mermaidText(`invoke ${invoke}`)}`);
      if (state.entry.length) lines.push(`${indent}${state.id} : ${mermaidText(`entry ${state.entry.join(', ')}`)}`);
      if (!state.invokes.length && !state.entry.length && !state.children.length) lines.push(`${indent}${state.id}`);
    }
  };
  emitStates(graph.states, graph.initial, '  ');
  if (graph.edges.some((e) => e.source === ANY_STATE)) lines.push(`  state "any state" as ${ANY_STATE}`);
  const compound = new Set(flatten(graph.states).filter((st) => st.children.length).map((st) => st.id));
  for (const edge of graph.edges) {
    const source = compound.has(edge.source) ? anyInside(edge.source) : edge.source;
    lines.push(`  ${source} --> ${edge.target} : ${mermaidText(edge.label)}`);
  }
  for (const state of flatten(graph.states)) if (state.final) lines.push(`  ${state.id} --> [*]`);
  return `${lines.join('\n')}\n`;
}

function dotString(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

/** Graphviz DOT; compound states become clusters. */
export function toDot(machine: AnyStateMachine): string {
  const graph = describeMachine(machine);
  const all = flatten(graph.states);
  const byId = new Map(all.map((s) => [s.id, s]));
  const leafOf = (id: string): string => {
    const state = byId.get(id);
    return state && state.children.length ? leafOf(state.initial ?? state.children[0].id) : id;
  };
  const sources = new Set(graph.edges.map((e) => e.source));
  // Legibility at ~1400 px (the `demo --ui` page): the 50-odd labelled edges make the picture
  // wide, and a browser scales it down to fit. Left to right with tight rank/node gaps and the
  // guard on its own line halves the width (TB: 2324 pt, this: ~1760 pt), so the states stay
  // readable (~12 px) and the labels legible (~8 px) at that width.
  const lines = [
    `digraph ${dotString(graph.id)} {`,
    '  rankdir=LR;',
    '  nodesep=0.15;',
    '  ranksep=0.3;',
    '  compound=true;',
    '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=16];',
    '  edge [fontname="Helvetica", fontsize=11];',
  ];
  const emitStates = (states: VizState[], initial: string | null, indent: string, scope: string) => {
    if (initial) {
      const start = `__initial_${scope}`;
      lines.push(`${indent}${dotString(start)} [shape=point, width=0.12, label=""];`);
      lines.push(`${indent}${dotString(start)} -> ${dotString(leafOf(initial))};`);
    }
    for (const state of states) {
      const details = [
        ...state.invokes.map((i) => `invoke: ${i}`),
        ...(state.entry.length ? [`entry: ${state.entry.join(', ')}`] : []),
      ];
      if (state.children.length) {
        lines.push(`${indent}subgraph ${dotString(`cluster_${state.id}`)} {`);
        lines.push(`${indent}  label=${dotString([state.name, ...details].join('\n'))};`);
        // Its own transitions start from a node inside the cluster: Graphviz cannot clip an edge
        // at the border of a cluster that also holds its head.
        if (sources.has(state.id)) lines.push(`${indent}  ${dotString(state.id)} [label=${dotString(`any ${state.name} state`)}, style=dashed];`);
        emitStates(state.children, state.initial, `${indent}  `, state.id);
        lines.push(`${indent}}`);
        continue;
      }
      const attrs = [`label=${dotString([state.name, ...details].join('\n'))}`];
      if (state.final) attrs.push('peripheries=2');
      lines.push(`${indent}${dotString(state.id)} [${attrs.join(', ')}];`);
    }
  };
  emitStates(graph.states, graph.initial, '  ', 'root');
  if (graph.edges.some((e) => e.source === ANY_STATE)) lines.push(`  ${dotString(ANY_STATE)} [label="any state", style=dashed];`);
  for (const edge of graph.edges) {
    // The guard goes under the event: a label's width, not its height, is what widens a rank.
    const attrs = [`label=${dotString(edge.label.replace(' [', '\n['))}`];
    if (edge.targetless) attrs.push('style=dashed');
    // Edges into a compound state attach to its initial leaf, clipped at the cluster border.
    const [source, target] = [edge.source, leafOf(edge.target)];
    if (target !== edge.target) attrs.push(`lhead=${dotString(`cluster_${edge.target}`)}`);
    lines.push(`  ${dotString(source)} -> ${dotString(target)} [${attrs.join(', ')}];`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
