/** The local cloud in a process of its own, driven over IPC by bench/cloud.ts. */
import { commandsOf, infoOf, startCloud, type BenchCloudOptions } from './cloud';

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? '{}') as BenchCloudOptions;
  const cloud = await startCloud(options);
  const commands = commandsOf(cloud) as unknown as Record<string, (...args: unknown[]) => unknown>;
  process.on('message', (m) => {
    const { id, cmd, args } = m as { id: number; cmd: string; args: unknown[] };
    if (cmd === 'stop') {
      void cloud.stop().then(() => {
        process.send!({ id, result: null }, () => process.disconnect());
      });
      return;
    }
    Promise.resolve()
      .then(() => commands[cmd]!(...args))
      .then(
        (result) => process.send!({ id, result }),
        (error: unknown) => process.send!({ id, error: (error as Error).message }),
      );
  });
  // The parent went away: do not linger.
  process.on('disconnect', () => void cloud.stop().finally(() => process.exit(0)));
  process.send!({ info: infoOf(cloud) });
}

main().catch((error: unknown) => {
  process.stderr.write(`cloud child: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
