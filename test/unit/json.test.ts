import { jsonDepth, MAX_TWIN_DEPTH } from '../../src/json';

const nested = (levels: number): unknown => JSON.parse('{"a":'.repeat(levels) + '1' + '}'.repeat(levels));

test('depth: primitives 0, {} and [] 1, each nesting one more; arrays count like objects', () => {
  expect([1, 'x', null, true].map((v) => jsonDepth(v))).toEqual([0, 0, 0, 0]);
  expect(jsonDepth({})).toBe(1);
  expect(jsonDepth([])).toBe(1);
  expect(jsonDepth({ a: 1, b: { c: [1, { d: 2 }] } })).toBe(4);
  expect(jsonDepth(nested(MAX_TWIN_DEPTH))).toBe(MAX_TWIN_DEPTH);
});

test('past the limit it stops at limit + 1, without recursion, even 200,000 levels down', () => {
  const deep = nested(200_000);
  expect(() => JSON.stringify(deep)).toThrow(RangeError); // what a recursive walk would do
  expect(jsonDepth(deep)).toBe(MAX_TWIN_DEPTH + 1);
  expect(jsonDepth(deep, 3)).toBe(4);
  expect(jsonDepth(nested(MAX_TWIN_DEPTH + 1))).toBe(MAX_TWIN_DEPTH + 1);
});
