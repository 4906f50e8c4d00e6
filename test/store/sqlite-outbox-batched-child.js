// Child process for the SqliteOutbox group-commit crash test: like test/fixtures/sqlite-outbox-child.js
// (same arguments, same output), but it adds 25 messages per event-loop turn with addBatched() and
// prints `accepted <seq> <messageId>` as each promise resolves, i.e. after its batch committed.
'use strict';
require('../support/ts-register.js');

const { SqliteOutbox } = require('../../src/store/sqlite-outbox.ts');

const BATCH = 25;
const [path, prefix, max] = process.argv.slice(2);
const outbox = new SqliteOutbox({ path });
process.stdout.write('ready\n');

async function main() {
  for (let i = 0; i < Number(max); ) {
    const batch = [];
    for (const end = Math.min(i + BATCH, Number(max)); i < end; i++) {
      const messageId = `${prefix}-${i}`;
      const body = JSON.stringify({ i, padding: 'x'.repeat(100) });
      const added = outbox.addBatched({ messageId, body, properties: { n: String(i) }, createdAt: Date.now(), bytes: body.length });
      // On Linux, writes to a pipe are synchronous: the parent can only read ids whose promise resolved.
      batch.push(added.then((stored) => process.stdout.write(`accepted ${stored.seq} ${messageId}\n`)));
    }
    await Promise.all(batch);
  }
  outbox.close();
  process.stdout.write('finished\n');
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
