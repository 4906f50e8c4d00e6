/**
 * JSON facts shared by the device and the local cloud.
 *
 * IoT Hub refuses twin documents nested deeper than 10 levels. A device must not rely on that:
 * JSON.parse accepts any depth, while JSON.stringify and every recursive walk overflow the stack
 * a few thousand levels down. So depth is measured without recursion, and only up to the limit.
 */

/** Deepest nesting IoT Hub accepts in desired and reported properties. */
export const MAX_TWIN_DEPTH = 10;

/**
 * Nesting depth of a JSON value: 0 for a primitive, 1 for `{}` or `[]`, 2 for `{"a":{}}` ...
 * Stops counting past `limit` (returns `limit + 1`), so a hostile value costs at most the
 * objects within the limit. No recursion.
 */
export function jsonDepth(value: unknown, limit = MAX_TWIN_DEPTH): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [node, above] = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    const depth = above + 1;
    if (depth > limit) return limit + 1;
    if (depth > deepest) deepest = depth;
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth]);
    }
  }
  return deepest;
}

/**
 * Why `value` would not survive JSON as the caller means it, or undefined. JSON.stringify turns a
 * Map or Set into `{}`, a Buffer or typed array into an object of indexes, NaN and ±Infinity into
 * `null`, and a function, symbol or undefined inside an array into `null`: data lost without a
 * word. Those are refused here. What JSON means on purpose is kept: an object's `toJSON` (a Date
 * becomes its ISO string), and an `undefined` member of an object is left out. A BigInt makes
 * JSON.stringify itself throw. No recursion; each object is visited once (cycles are
 * JSON.stringify's to refuse).
 */
export function jsonOddity(value: unknown): string | undefined {
  const top = primitiveOddity(value, false);
  if (top !== undefined) return `the value ${top}`;
  if (typeof value !== 'object' || value === null) return undefined;
  // Paths are built only for the answer: a frame knows its parent and its key.
  const stack: OddityFrame[] = [{ node: value, parent: undefined, key: '' }];
  // Made at the first nested object: a flat object (most telemetry) needs none.
  let seen: Set<object> | undefined;
  while (stack.length > 0) {
    const frame = stack.pop()!;
    const node = frame.node;
    if (frame.parent !== undefined) {
      seen ??= new Set<object>([value]);
      if (seen.has(node)) continue;
      seen.add(node);
    }
    const odd = objectOddity(node);
    if (odd !== undefined) return `${whereOf(frame)} ${odd}`;
    if (typeof (node as { toJSON?: unknown }).toJSON === 'function') continue;
    if (Array.isArray(node)) {
      for (let index = 0; index < node.length; index++) {
        const child: unknown = node[index];
        if (typeof child === 'object' && child !== null) stack.push({ node: child, parent: frame, key: index });
        else if (child !== undefined || index in node) {
          // A hole is skipped (as forEach does); a present undefined is not.
          const problem = primitiveOddity(child, true);
          if (problem !== undefined) return `${whereOf(frame, index)} ${problem}`;
        }
      }
    } else {
      const record = node as Record<string, unknown>;
      for (const key of Object.keys(record)) {
        const child = record[key];
        if (typeof child === 'object' && child !== null) stack.push({ node: child, parent: frame, key });
        else {
          const problem = primitiveOddity(child, false);
          if (problem !== undefined) return `${whereOf(frame, key)} ${problem}`;
        }
      }
    }
  }
  return undefined;
}

/** A value met by jsonOddity's walk: where it is, as its parent and its key (an index in an array). */
interface OddityFrame {
  node: object;
  parent: OddityFrame | undefined;
  key: string | number;
}

/** Where the walk met a value (`frame`, or its child `key`), as the messages name it. No recursion. */
function whereOf(frame: OddityFrame, key?: string | number): string {
  const keys: Array<string | number> = key === undefined ? [] : [key];
  for (let at: OddityFrame | undefined = frame; at?.parent !== undefined; at = at.parent) keys.push(at.key);
  let path = '';
  for (let i = keys.length - 1; i >= 0; i--) {
    const step = keys[i]!;
    path = typeof step === 'number' ? `${path}[${step}]` : path === '' ? step : `${path}.${step}`;
  }
  return path === '' ? 'the value' : `'${path}'`;
}

/** What JSON would do wrong with a value that is not an object, or undefined. */
function primitiveOddity(node: unknown, inArray: boolean): string | undefined {
  if (typeof node === 'number') return Number.isFinite(node) ? undefined : `is ${node}, which JSON turns into null`;
  if (typeof node === 'bigint') return 'is a BigInt, which JSON cannot hold';
  if (inArray && (node === undefined || typeof node === 'function' || typeof node === 'symbol')) {
    return `is ${typeof node}, which JSON turns into null in an array`;
  }
  return undefined;
}

/** What JSON would do wrong with an object of a kind it cannot hold, or undefined. */
function objectOddity(node: object): string | undefined {
  if (node instanceof Map || node instanceof Set || node instanceof WeakMap || node instanceof WeakSet) {
    return `is a ${node.constructor.name}, which JSON turns into {}: pass a plain object or an array`;
  }
  if (ArrayBuffer.isView(node) || node instanceof ArrayBuffer) {
    return `is binary (${node.constructor.name}), which JSON turns into numbers by index: encode it (e.g. base64) first`;
  }
  return undefined;
}
