import { jsonDepth, jsonOddity, MAX_TWIN_DEPTH } from '../../src/json';

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

describe('jsonOddity', () => {
  test('a flat object of JSON values has none; a non-finite number or a BigInt is named by its path', () => {
    expect(jsonOddity({ temp: 21.5, ok: true, site: 's', none: null, skipped: undefined })).toBeUndefined();
    expect(jsonOddity({ temp: NaN })).toBe("'temp' is NaN, which JSON turns into null");
    expect(jsonOddity({ a: { b: [1, { c: Infinity }] } })).toBe("'a.b[1].c' is Infinity, which JSON turns into null");
    expect(jsonOddity({ n: 1n })).toBe("'n' is a BigInt, which JSON cannot hold");
  });

  test('kinds JSON cannot hold are named wherever they are; a toJSON object is left to JSON', () => {
    expect(jsonOddity({ a: [new Map()] })).toMatch(/^'a\[0\]' is a Map/);
    expect(jsonOddity({ a: { b: new Uint8Array(2) } })).toMatch(/^'a\.b' is binary \(Uint8Array\)/);
    expect(jsonOddity({ at: new Date(0), custom: { toJSON: () => 1, inner: NaN } })).toBeUndefined();
    expect(jsonOddity([1, undefined])).toBe("'[1]' is undefined, which JSON turns into null in an array");
  });

  test('a cycle ends the walk (JSON.stringify refuses it); an object met twice is still checked, and named by one of its paths', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic['self'] = cyclic;
    cyclic['inner'] = { back: cyclic };
    expect(jsonOddity(cyclic)).toBeUndefined();
    const shared = { bad: -Infinity };
    const twice = { x: shared, y: shared };
    expect(jsonOddity(twice)).toBe("'y.bad' is -Infinity, which JSON turns into null"); // the walk takes the last key first
    const deep: Record<string, unknown> = {};
    let at = deep;
    for (let i = 0; i < 100_000; i++) at = (at['n'] = {}) as Record<string, unknown>;
    at['v'] = NaN;
    expect(jsonOddity(deep)).toMatch(/is NaN/);
  });
});
