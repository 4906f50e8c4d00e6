import type { ValueCheck } from './types';

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const TIME = /^\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?$/;
const DURATION = /^P(?!$)(?:\d+(?:\.\d+)?Y)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?W)?(?:\d+(?:\.\d+)?D)?(?:T(?=\d)(?:\d+(?:\.\d+)?H)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?S)?)?$/;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `a string`;
  return `${typeof value === 'object' ? 'an' : 'a'} ${typeof value}`;
}

/** Why `value` does not fit `check`, or undefined when it does. */
export function checkValue(check: ValueCheck | undefined, value: unknown): string | undefined {
  if (check === undefined) return undefined;
  if (typeof check === 'function') {
    try {
      return check(value);
    } catch (error) {
      return (error as Error).message;
    }
  }
  const wrong = () => `expected ${check === 'integer' || check === 'object' ? 'an' : 'a'} ${check}, got ${describe(value)}`;
  switch (check) {
    case 'boolean':
      return typeof value === 'boolean' ? undefined : wrong();
    case 'integer':
      return Number.isInteger(value) && Math.abs(value as number) <= 2 ** 31 ? undefined : wrong();
    case 'long':
      return Number.isSafeInteger(value) ? undefined : wrong();
    case 'double':
    case 'float':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : wrong();
    case 'string':
      return typeof value === 'string' ? undefined : wrong();
    case 'date':
      return typeof value === 'string' && DATE.test(value) && !Number.isNaN(Date.parse(value)) ? undefined : wrong();
    case 'time':
      return typeof value === 'string' && TIME.test(value) ? undefined : wrong();
    case 'dateTime':
      return typeof value === 'string' && value.includes('T') && !Number.isNaN(Date.parse(value)) ? undefined : wrong();
    case 'duration':
      return typeof value === 'string' && DURATION.test(value) ? undefined : wrong();
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value) ? undefined : wrong();
  }
}

/** Structural equality of JSON values (object key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    return a.length === other.length && a.every((item, i) => jsonEqual(item, other[i]));
  }
  const keysA = Object.keys(a);
  const keysB = Object.keys(b);
  return keysA.length === keysB.length && keysA.every((key) => jsonEqual((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]));
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
