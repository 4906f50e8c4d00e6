/**
 * The `DeviceMove` command of IoT Central's device migration component, as Microsoft's migration
 * tool defines and sends it (Azure/iotc-migrator):
 * - the interface, assets/deviceMigrationComponent.json: `dtmi:azureiot:DeviceMigration;1`, one
 *   synchronous command `DeviceMove` whose request is an object of strings: `idScope`, `dpsName`,
 *   `dpsId`, `centralAppName`, `centralAppSubdomain`, `deviceTemplateId` (no key: the target
 *   enrollment group is created with the source app's group keys, src/api.ts
 *   createDpsEnrollment);
 * - the component's name is the template's own (src/pages/newMigration.tsx reads it from the
 *   template, `${componentName}.DeviceMove`); the device samples name it `migration`, so the
 *   direct method is `migration*DeviceMove` (device_samples/nodejs/typescript/device.ts);
 * - from an IoT Hub source the tool invokes the bare `DeviceMove` with `{ idScope,
 *   deviceTemplateId }` (src/api.ts invokeCommand);
 * - the samples answer 200 and then provision against the new ID scope (the .NET one answers
 *   400 to a payload it cannot read).
 */
import { CommandError } from './types';
import { ID_SCOPE_PATTERN } from '../store/id-scope';

export const DEVICE_MIGRATION_INTERFACE_ID = 'dtmi:azureiot:DeviceMigration;1';
export const DEVICE_MOVE_COMMAND = 'DeviceMove';
/** The component name of Microsoft's device samples. */
export const DEFAULT_MIGRATION_COMPONENT = 'migration';

/** The request of `DeviceMove`: `idScope` is what the device acts on; the rest is informative. */
export interface DeviceMoveRequest {
  idScope: string;
  dpsName?: string;
  dpsId?: string;
  centralAppName?: string;
  centralAppSubdomain?: string;
  deviceTemplateId?: string;
}

const OPTIONAL_FIELDS = ['dpsName', 'dpsId', 'centralAppName', 'centralAppSubdomain', 'deviceTemplateId'] as const;
/** A resource id or an app name is far shorter; anything longer is not one. */
const MAX_FIELD_LENGTH = 1024;

/** A `DeviceMove` payload that is not one: answered 400 with the reason, nothing changes. */
export class InvalidDeviceMoveError extends CommandError {
  constructor(reason: string) {
    super(400, `invalid DeviceMove payload: ${reason}`);
  }
}

/**
 * The `DeviceMove` request in `payload`, or InvalidDeviceMoveError. Fields the interface does not
 * name are ignored (a later tool may send more); a named one must be a string (or null).
 */
export function parseDeviceMove(payload: unknown): DeviceMoveRequest {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw new InvalidDeviceMoveError('expected an object { idScope, ... }');
  }
  const fields = payload as Record<string, unknown>;
  const { idScope } = fields;
  if (typeof idScope !== 'string' || !ID_SCOPE_PATTERN.test(idScope)) {
    throw new InvalidDeviceMoveError('idScope must be a DPS ID scope: 1 to 64 letters and digits');
  }
  const request: DeviceMoveRequest = { idScope };
  for (const name of OPTIONAL_FIELDS) {
    const value = fields[name];
    if (value === undefined || value === null) continue;
    if (typeof value !== 'string' || value.length > MAX_FIELD_LENGTH) {
      throw new InvalidDeviceMoveError(`${name} must be a string of at most ${MAX_FIELD_LENGTH} characters`);
    }
    request[name] = value;
  }
  return request;
}
