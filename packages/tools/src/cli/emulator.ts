/**
 * `hubstate emulator`: the local cloud standalone, for anyone's device code. It writes this run's
 * CA to a file and prints an environment block with the variable names the official Azure IoT
 * Node SDK samples read, so an unmodified sample runs against it: `NODE_EXTRA_CA_CERTS` makes
 * Node trust the CA without a `ca` option in the code.
 */
import { lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { startLocalCloud, type LocalCloud, type MovedDeviceRefusal, registrationIdProblem } from 'hubstate-cloud';
import { writeFileAtomic } from 'hubstate/internal';
import { UsageError } from './args';
import { aborted } from './shutdown';

export interface EmulatorCommandOptions {
  hubs: number;
  /** Print this device's id and key (derived from the group key) in the environment block. */
  registrationId?: string;
  /** Where to write the CA (PEM). Default: `ca.pem` in a fresh private temporary directory, removed at exit. */
  caOut?: string;
  /** CONNACK code for a moved or disabled device (`hub.refusalCode`). */
  refusalCode?: MovedDeviceRefusal;
  /** Issue an X.509 device certificate (CN = this id) and write it beside the CA file. */
  issueCert?: string;
  out: NodeJS.WritableStream;
  /** Stops the cloud when aborted. Default: the first SIGINT or SIGTERM. */
  signal?: AbortSignal;
}

/** Validates the `emulator` flags: a mistake is one line naming the flag (exit 2). */
export function emulatorFlags(flags: Record<string, string | boolean | undefined>): Omit<EmulatorCommandOptions, 'hubs' | 'out' | 'signal'> {
  const registrationId = flags['registration-id'] as string | undefined;
  // The local DPS's own rule: an id it would answer 400 is a mistake now, not at the device.
  const registrationIdMistake = registrationId === undefined ? undefined : registrationIdProblem(registrationId);
  if (registrationIdMistake !== undefined) throw new UsageError(`--registration-id: ${registrationIdMistake}, got '${registrationId}'`);
  const issueCert = flags['issue-cert'] as string | undefined;
  // The CN becomes the registration id: DPS's rule applies; the id also names the files.
  const issueCertMistake = issueCert === undefined ? undefined : registrationIdProblem(issueCert);
  if (issueCertMistake !== undefined) throw new UsageError(`--issue-cert: ${issueCertMistake}, got '${issueCert}'`);
  const refusal = flags['refusal-code'] as string | undefined;
  if (refusal !== undefined && refusal !== '3' && refusal !== '5') {
    throw new UsageError(`--refusal-code: expected 3 or 5, got '${refusal}'`);
  }
  const caOut = flags['ca-out'] as string | undefined;
  if (caOut !== undefined) {
    if (caOut === '') throw new UsageError("--ca-out: expected a file path, got ''");
    if (isDirectory(caOut)) throw new UsageError(`--ca-out: expected a file path, got the directory '${caOut}'`);
  }
  return {
    ...(registrationId !== undefined ? { registrationId } : {}),
    ...(issueCert !== undefined ? { issueCert } : {}),
    ...(refusal !== undefined ? { refusalCode: Number(refusal) as MovedDeviceRefusal } : {}),
    ...(caOut !== undefined ? { caOut: resolve(caOut) } : {}),
  };
}

function isDirectory(path: string): boolean {
  try {
    // lstat: a symlink at the path is replaced by the CA file, whatever it points to.
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The variables the official Azure IoT Node SDK samples read (Azure/azure-iot-sdk-node):
 * `provisioning/device/samples/register_symkey.js` (PROVISIONING_*) and
 * `device/samples/javascript/pnp_temperature_controller.js` (IOTHUB_DEVICE_*), plus
 * `hubstate run`'s own (HUBSTATE_*). The device's id and key only with a registration id.
 */
export function sampleEnvironment(cloud: Pick<LocalCloud, 'provisioningHost' | 'idScope' | 'deviceKey'>, caFile: string, registrationId?: string): Array<[string, string]> {
  const key = registrationId === undefined ? undefined : cloud.deviceKey(registrationId);
  const device = (idName: string, keyName: string): Array<[string, string]> =>
    registrationId === undefined || key === undefined ? [] : [[idName, registrationId], [keyName, key]];
  return [
    ['NODE_EXTRA_CA_CERTS', caFile],
    ['PROVISIONING_HOST', cloud.provisioningHost],
    ['PROVISIONING_IDSCOPE', cloud.idScope],
    ...device('PROVISIONING_REGISTRATION_ID', 'PROVISIONING_SYMMETRIC_KEY'),
    ['IOTHUB_DEVICE_SECURITY_TYPE', 'DPS'],
    ['IOTHUB_DEVICE_DPS_ENDPOINT', cloud.provisioningHost],
    ['IOTHUB_DEVICE_DPS_ID_SCOPE', cloud.idScope],
    ...device('IOTHUB_DEVICE_DPS_DEVICE_ID', 'IOTHUB_DEVICE_DPS_DEVICE_KEY'),
    ['HUBSTATE_PROVISIONING_HOST', cloud.provisioningHost],
    ['HUBSTATE_ID_SCOPE', cloud.idScope],
    ['HUBSTATE_CA_FILE', caFile],
    ...device('HUBSTATE_REGISTRATION_ID', 'HUBSTATE_DEVICE_KEY'),
  ];
}

/** `export NAME='value'` lines for a POSIX shell (single quotes: paths with spaces, keys with `+/=`). */
export function shellExports(variables: Array<[string, string]>): string {
  return variables.map(([name, value]) => `export ${name}='${value.replace(/'/g, `'\\''`)}'`).join('\n');
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/**
 * Issues a device certificate of the X.509 enrollment group and writes `<id>.cert.pem` and
 * `<id>.key.pem` in `dir`: each 0600, written beside and renamed over (never through a symlink).
 */
export async function writeDeviceCertificate(cloud: Pick<LocalCloud, 'issueDeviceCertificate'>, registrationId: string, dir: string): Promise<{ cert: string; key: string }> {
  const issued = await cloud.issueDeviceCertificate(registrationId);
  const cert = join(dir, `${registrationId}.cert.pem`);
  const key = join(dir, `${registrationId}.key.pem`);
  writeFileAtomic(cert, issued.cert);
  writeFileAtomic(key, issued.key);
  return { cert, key };
}

export async function runEmulator(options: EmulatorCommandOptions): Promise<void> {
  const { out } = options;
  const cloud = await startLocalCloud({
    hubs: options.hubs,
    controlApi: true,
    ...(options.refusalCode !== undefined ? { hub: { refusalCode: options.refusalCode } } : {}),
  });
  const temporaryDir = options.caOut === undefined ? mkdtempSync(join(tmpdir(), 'hubstate-emulator-')) : undefined;
  try {
    const caFile = options.caOut ?? join(temporaryDir!, 'ca.pem');
    // 0600, written beside and renamed over the path: never through a symlink that sits there.
    writeFileAtomic(caFile, cloud.ca);
    const certFiles = options.issueCert === undefined ? undefined : await writeDeviceCertificate(cloud, options.issueCert, dirname(caFile));
    out.write(
      [
        'local cloud running',
        `  provisioning host  ${cloud.provisioningHost}`,
        `  id scope           ${cloud.idScope}`,
        `  hubs               ${cloud.hubs.map((h) => `${h.name}=${h.host}`).join(', ')}`,
        `  control API        ${cloud.controlUrl ?? '-'}   (curl examples: packages/cloud/README.md)`,
        `  CA certificate     ${caFile}   (this run's own CA, PEM; pass as \`ca\` or NODE_EXTRA_CA_CERTS)`,
        `  group key          ${cloud.groupKey}   (a secret of this run only: device keys derive from it)`,
        ...(options.refusalCode !== undefined ? [`  refusal code       CONNACK ${options.refusalCode} for a moved or disabled device`] : []),
        ...(certFiles
          ? [
              `  X.509 certificate  ${certFiles.cert}   (CN ${options.issueCert}, signed by this run's enrollment-group CA, with its chain)`,
              `  X.509 key          ${certFiles.key}   (0600; createDevice({ registrationId: '${options.issueCert}', x509: { cert, key } }))`,
            ]
          : []),
        '',
        '# Environment for unmodified Azure IoT Node SDK samples (register_symkey.js,',
        '# pnp_temperature_controller.js) and `hubstate run`; paste into a POSIX shell:',
        shellExports(sampleEnvironment(cloud, caFile, options.registrationId)),
        ...(options.registrationId === undefined ? ["# add --registration-id <id> for the device's id and key"] : []),
        '',
        `Ctrl-C stops the local cloud${temporaryDir ? ' and removes its CA file' : ''}.`,
        '',
      ].join('\n'),
    );
    await (options.signal ? aborted(options.signal) : untilSignal());
  } finally {
    await cloud.stop();
    if (temporaryDir) rmSync(temporaryDir, { recursive: true, force: true });
  }
}
