/** IoT Hub's twin rules as util.ts implements them ("Understand device twins": format and size). */
import { TWIN_SECTION_LIMIT_BYTES, d2cMessageSize, twinNameProblem, twinPatchProblem, twinSize, withoutTwinMetadata } from '../src/util';

describe('twinSize counts as IoT Hub does, not JSON length', () => {
  test.each([
    ['a number is 8 bytes', { a: 1 }, 1 + 8],
    ['a boolean is 4 bytes', { flag: false }, 4 + 4],
    ['a string is its UTF-8 bytes', { s: 'héllo' }, 1 + 6],
    ['control characters (C0, DEL, C1) are not counted', { s: 'a\u0000b\u001f\u007f\u0085c' }, 1 + 3],
    ['a name is its UTF-8 bytes', { 'température': 'x' }, 12 + 1],
    ['an object is the sum of its members', { outer: { a: 1, b: true } }, 5 + (1 + 8) + (1 + 4)],
    ['array elements count as values', { list: [1, 'ab', false] }, 4 + 8 + 2 + 4],
    ['null counts nothing but its name', { gone: null }, 4],
    ['top-level $version and $metadata are excluded', { $version: 3, $metadata: { $lastUpdated: 'x' }, a: 1 }, 9],
  ])('%s', (_what, section, expected) => {
    expect(twinSize(section)).toBe(expected);
  });

  test('many small numbers: under 32 KB as JSON, over as IoT Hub counts', () => {
    const section: Record<string, number> = {};
    for (let i = 0; i < 3000; i++) section[`p${String(i).padStart(4, '0')}`] = 1; // "p0000":1, → 9 JSON bytes, 13 here
    expect(Buffer.byteLength(JSON.stringify(section))).toBeLessThan(TWIN_SECTION_LIMIT_BYTES);
    expect(twinSize(section)).toBe(3000 * 13);
    expect(twinSize(section)).toBeGreaterThan(TWIN_SECTION_LIMIT_BYTES);
  });
});

describe('twin property names', () => {
  test.each([
    ['a dot', 'a.b', /'\.'/],
    ['a dollar', 'a$b', /'\$'/],
    ['a leading dollar', '$custom', /'\$'/],
    ['a space', 'a b', /' '/],
    ['a C0 control', 'tab\there', /U\+0009/],
    ['a C1 control', 'c1\u0085', /U\+0085/],
    ['over 1 KB', 'n'.repeat(1025), /longer than 1024 bytes/],
  ])('a name with %s is refused', (_what, name, why) => {
    expect(twinNameProblem(name)).toMatch(why);
  });

  test.each([
    ['plain', 'fanSpeed'],
    ['non-ASCII', 'température'],
    ['the PnP component marker', '__t'],
    ['- _ :', 'a-b_c:d'],
    ['exactly 1 KB', 'n'.repeat(1024)],
    ['1 KB of 2-byte characters', 'é'.repeat(512)],
  ])('a %s name is accepted', (_what, name) => {
    expect(twinNameProblem(name)).toBeUndefined();
  });

  test('a patch is checked at every depth and inside arrays; top-level metadata is read-only, not invalid', () => {
    expect(twinPatchProblem({ ok: { 'not.ok': 1 } })).toMatch(/'\.'/);
    expect(twinPatchProblem({ list: [{ 'bad key': 1 }] })).toMatch(/' '/);
    expect(twinPatchProblem({ nested: { $version: 1 } })).toMatch(/'\$'/);
    expect(twinPatchProblem({ $version: 4, $metadata: {}, fine: { deeper: 'yes' } })).toBeUndefined();
    expect(withoutTwinMetadata({ $version: 4, $metadata: {}, fine: 1 })).toEqual({ fine: 1 });
  });
});

test('a device-to-cloud message is measured as body + system property values + application property names and values', () => {
  const body = Buffer.alloc(100);
  expect(d2cMessageSize(body, { '$.mid': 'abc', '$.ct': 'application/json', unit: '°C' })).toBe(100 + 3 + 16 + 4 + 3);
});
