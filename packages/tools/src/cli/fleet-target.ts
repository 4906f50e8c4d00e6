/**
 * `hubstate fleet --id-scope ...`: the DPS of your own that the fleet provisions through. The
 * group key comes only from HUBSTATE_GROUP_KEY: on the command line it would be visible to every
 * user of the machine (`ps`). Every field is checked the way a device checks it (one device's
 * options are resolved up front), so a mistake is one line naming the flag, before any device starts.
 */
import { resolve } from 'node:path';
import { ConfigError } from 'hubstate';
import type { FleetCloud } from '../fleet';
import { resolveOptions } from 'hubstate/internal';
import { UsageError } from './args';
import { readBoundedFile } from './files';

const FLAG_OF_FIELD: Record<string, string> = {
  idScope: '--id-scope',
  registrationId: '--prefix',
  groupKey: 'HUBSTATE_GROUP_KEY',
  'groupKey|deviceKey': 'HUBSTATE_GROUP_KEY',
  provisioningHost: '--provisioning-host',
  ca: '--ca-file',
};

export function fleetTarget(
  flags: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv,
  cwd = process.cwd(),
  /** How many devices: every registration id `${prefix}0` … `${prefix}${devices - 1}` is checked. */
  devices = 1,
): { cloud: FleetCloud; prefix: string } | null {
  const idScope = flags['id-scope'] as string | undefined;
  if (idScope === undefined) {
    for (const flag of ['provisioning-host', 'ca-file', 'prefix']) {
      if (flags[flag] !== undefined) throw new UsageError(`--${flag}: only with --id-scope (a DPS of your own)`);
    }
    return null;
  }
  const groupKey = env.HUBSTATE_GROUP_KEY;
  if (groupKey === undefined || groupKey === '') {
    throw new ConfigError('HUBSTATE_GROUP_KEY', 'the enrollment group key (environment only, never a flag) when --id-scope is given');
  }
  const prefix = (flags.prefix as string | undefined) ?? 'fleet-';
  let ca: string | undefined;
  const caFile = flags['ca-file'] as string | undefined;
  if (caFile !== undefined) ca = readBoundedFile(resolve(cwd, caFile), '--ca-file', 'a readable PEM file', caFile);
  const provisioningHost = flags['provisioning-host'] as string | undefined;
  try {
    const options = {
      idScope,
      registrationId: `${prefix}0`,
      groupKey,
      ...(provisioningHost !== undefined ? { provisioningHost } : {}),
      ...(ca !== undefined ? { ca } : {}),
    };
    const resolved = resolveOptions(options);
    // The ids differ only in their decimal suffix: the last is the longest.
    const last = `${prefix}${Math.max(0, devices - 1)}`;
    try {
      resolveOptions({ ...options, registrationId: last });
    } catch (error) {
      if (error instanceof ConfigError && error.field === 'registrationId') {
        throw new ConfigError('--prefix', `a prefix giving registration ids of up to 128 letters, digits and - . _ : (device ${devices - 1} would be ${last.length} characters)`);
      }
      throw error;
    }
    return { cloud: { idScope, groupKey, provisioningHost: resolved.provisioningHost, ...(ca !== undefined ? { ca } : {}) }, prefix };
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(FLAG_OF_FIELD[error.field] ?? error.field, error.expected);
    throw error;
  }
}
