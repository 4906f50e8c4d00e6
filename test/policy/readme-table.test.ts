/**
 * The README's rule table is the rendered CLASSIFICATION_TABLE, verbatim (like the Mermaid
 * diagram in test/readme.test.ts). After changing a rule:
 *   UPDATE_README_RULES=1 npx jest test/policy/readme-table
 * rewrites the block between the two markers (and nothing else), then this test passes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLASSIFICATION_TABLE } from '../../src/policy/classify';
import { renderClassificationTable, RULE_TABLE_BEGIN, RULE_TABLE_END } from '../../src/policy/render-table';

const readmePath = join(__dirname, '..', '..', 'README.md');

function block(readme: string): { start: number; end: number; table: string } {
  const start = readme.indexOf(RULE_TABLE_BEGIN);
  const end = readme.indexOf(RULE_TABLE_END);
  expect({ begin: start >= 0, end: end > start }).toEqual({ begin: true, end: true });
  return { start, end, table: readme.slice(start + RULE_TABLE_BEGIN.length, end).trim() };
}

describe('README rule table', () => {
  test('is the rendered CLASSIFICATION_TABLE (UPDATE_README_RULES=1 to rewrite it)', () => {
    let readme = readFileSync(readmePath, 'utf8');
    const rendered = renderClassificationTable();
    if (process.env['UPDATE_README_RULES'] === '1') {
      const { start, end } = block(readme);
      readme = `${readme.slice(0, start + RULE_TABLE_BEGIN.length)}\n${rendered}\n${readme.slice(end)}`;
      writeFileSync(readmePath, readme);
    }
    expect(block(readme).table).toBe(rendered);
  });

  test('sits in the Policy section', () => {
    const readme = readFileSync(readmePath, 'utf8');
    const policy = readme.indexOf('\n## Policy\n');
    const next = readme.indexOf('\n## ', policy + 1);
    const { start } = block(readme);
    expect(start > policy && start < next).toBe(true);
  });

  test('renders every rule once, in table order, with its class, floor, DPS flag and why', () => {
    const rows = renderClassificationTable().split('\n').slice(2);
    expect(rows).toHaveLength(CLASSIFICATION_TABLE.length);
    CLASSIFICATION_TABLE.forEach((rule, i) => {
      const cells = rows[i]!.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim());
      expect(cells).toEqual([
        String(i + 1),
        `\`${rule.rule}\``,
        rule.errorClass,
        rule.minDelayMs === undefined ? '' : `≥ ${rule.minDelayMs / 1000} s`,
        rule.assignmentInDoubt ? 'yes' : '',
        rule.why.replace(/\|/g, '\\|'),
      ]);
    });
  });

  test('escapes what would break a Markdown row', () => {
    const table = renderClassificationTable([{ rule: 'r', errorClass: 'fatal', when: () => true, why: 'a | b\nc', minDelayMs: 1500 }]);
    expect(table.split('\n')[2]).toBe('| 1 | `r` | fatal | ≥ 1500 ms |  | a \\| b c |');
  });
});
