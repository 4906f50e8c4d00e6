/**
 * A twin section's size as IoT Hub counts it against its 32 KB ("Understand device twins", Device
 * twin size): names and strings in UTF-8 without Unicode control characters, a number 8 bytes, a
 * boolean 4, null nothing, objects and arrays the sum of what they hold. Not JSON's length: JSON
 * counts quotes, escapes and punctuation, and a number as its digits (`{"a":1}` is 7 bytes of
 * JSON, 9 here; a string of 1,000 `"` is 2,002 bytes of JSON, 1,000 here).
 */
// eslint-disable-next-line no-control-regex
const UNICODE_CONTROL = /[\u0000-\u001f\u007f-\u009f]/gu;

function stringSize(text: string): number {
  return Buffer.byteLength(text.replace(UNICODE_CONTROL, ''));
}

/** The size of `value` (a JSON value: what JSON.parse returns). */
export function twinSize(value: unknown): number {
  let size = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const item = stack.pop();
    if (typeof item === 'string') size += stringSize(item);
    else if (typeof item === 'number') size += 8;
    else if (typeof item === 'boolean') size += 4;
    else if (Array.isArray(item)) stack.push(...item);
    else if (typeof item === 'object' && item !== null) {
      for (const [name, child] of Object.entries(item)) {
        size += stringSize(name);
        stack.push(child);
      }
    }
  }
  return size;
}
