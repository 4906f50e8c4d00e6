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
  const seen = new Set<object>();
  const stack: Array<[unknown, string, boolean]> = [[value, '', false]];
  while (stack.length > 0) {
    const [node, path, inArray] = stack.pop()!;
    const where = path === '' ? 'the value' : `'${path}'`;
    if (typeof node === 'number' && !Number.isFinite(node)) return `${where} is ${node}, which JSON turns into null`;
    if (typeof node === 'bigint') return `${where} is a BigInt, which JSON cannot hold`;
    if (inArray && (node === undefined || typeof node === 'function' || typeof node === 'symbol')) {
      return `${where} is ${typeof node}, which JSON turns into null in an array`;
    }
    if (typeof node !== 'object' || node === null || seen.has(node)) continue;
    seen.add(node);
    if (node instanceof Map || node instanceof Set || node instanceof WeakMap || node instanceof WeakSet) {
      return `${where} is a ${node.constructor.name}, which JSON turns into {}: pass a plain object or an array`;
    }
    if (ArrayBuffer.isView(node) || node instanceof ArrayBuffer) {
      return `${where} is binary (${node.constructor.name}), which JSON turns into numbers by index: encode it (e.g. base64) first`;
    }
    if (typeof (node as { toJSON?: unknown }).toJSON === 'function') continue;
    if (Array.isArray(node)) {
      node.forEach((child, index) => stack.push([child, `${path}[${index}]`, true]));
    } else {
      for (const [key, child] of Object.entries(node)) stack.push([child, path === '' ? key : `${path}.${key}`, false]);
    }
  }
  return undefined;
}
