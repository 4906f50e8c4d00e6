/**
 * One module-load sample: `node load-child.js hubstate|sdk|sdk-xstate` loads one side and prints the time
 * from process start (performance.now(): since the process's time origin) to loaded, and how many
 * module files it loaded. `sdk-xstate`: the SDK's modules and XState, the two runtimes the
 * project's shape requires (what is left of the gap is our own code). `device`: hubstate loaded and one device created (default logger). `hubstate` is `require('hubstate')`, as an application loads it: the package's build (dist/hubstate.js, bundle.mjs; `npm run bench` builds it first).
 */

/** What a raw-SDK device needs (bench/raw-sdk.ts: device, MQTT transport, DPS over MQTT, SAS security). */
export const SDK_MODULES = [
  'azure-iot-common',
  'azure-iot-device',
  'azure-iot-device-mqtt',
  'azure-iot-mqtt-base',
  'azure-iot-provisioning-device',
  'azure-iot-provisioning-device-mqtt',
  'azure-iot-security-symmetric-key',
];

const side = process.argv[2];
/* eslint-disable @typescript-eslint/no-require-imports */
if (side === 'hubstate') require('hubstate');
else if (side === 'device') {
  // Loaded and one device created (not started), with the default logger: what the lazy loads defer.
  const { createDevice } = require('hubstate') as typeof import('../src/index');
  createDevice({ idScope: 'loadScope', registrationId: 'load-0', groupKey: Buffer.alloc(32, 1).toString('base64') });
}
else if (side === 'sdk') for (const name of SDK_MODULES) require(name);
else if (side === 'sdk-xstate') for (const name of [...SDK_MODULES, 'xstate']) require(name);
else throw new Error(`load-child: hubstate, device, sdk or sdk-xstate, not ${String(side)}`);
/* eslint-enable @typescript-eslint/no-require-imports */
const ms = performance.now();
const { user, system } = process.cpuUsage();
process.stdout.write(`${JSON.stringify({ side, ms, files: Object.keys(require.cache).length, cpuMicros: user + system })}\n`);
