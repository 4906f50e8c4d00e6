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
