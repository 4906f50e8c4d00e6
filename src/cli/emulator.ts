import { startLocalCloud } from '../emulator';

/** `hubstate emulator`: the local cloud standalone, for people testing their own device code. */
export async function runEmulator(options: { hubs: number; out: NodeJS.WriteStream }): Promise<void> {
  const cloud = await startLocalCloud({ hubs: options.hubs, controlApi: true });
  const { out } = options;
  out.write(
    [
      'local cloud running (Ctrl-C to stop)',
      `  provisioning host  ${cloud.provisioningHost}`,
      `  id scope           ${cloud.idScope}`,
      `  group key          ${cloud.groupKey}   (test key of this run only)`,
      `  hubs               ${cloud.hubs.map((h) => `${h.name}=${h.host}`).join(', ')}`,
      `  control API        ${cloud.controlUrl ?? '-'}`,
      '  CA certificate (pass as `ca`; TLS verification stays on):',
      cloud.ca.trim(),
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await cloud.stop();
}
