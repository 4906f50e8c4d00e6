/**
 * What a hub assignment may hold, wherever it comes from: a DPS registration, a status lookup or
 * the provisioning cache. A service answer outside these bounds is a protocol error, not a hub to
 * connect to: the device id goes into every MQTT topic and is measured against the topic limit.
 */

/** IoT Hub's longest device id. */
export const MAX_DEVICE_ID_LENGTH = 128;

/**
 * A device id this client can connect with: 1..128 ASCII letters, digits and
 * - : . + % _ # * ? ! ( ) , = @ $ ' — the set Microsoft documents for `deviceId` (e.g. the Event
 * Grid schema of IoT Hub events) but `;`. The SDK's hub client is built from a connection string
 * (`HostName=…;DeviceId=…;SharedAccessKey=…`) that it splits on `;`, the last key winning: an id
 * `dev;GatewayHostName=elsewhere` would send the device's token to another host. `+` and `#` are
 * kept: the SDK's C2D subscription refuses them, which the policy classifies as fatal with an
 * operator's message (classify.ts), better than a DPS answer refused forever.
 */
const DEVICE_ID = new RegExp(`^[A-Za-z0-9\\-:.+%_#*?!(),=@$']{1,${MAX_DEVICE_ID_LENGTH}}$`);

export function isDeviceId(value: unknown): value is string {
  return typeof value === 'string' && DEVICE_ID.test(value);
}

/** A DNS label: letters, digits and inner hyphens, 1..63 characters. */
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * A hub host: `host` or `host:port`, the host a DNS name (dot-separated labels of letters, digits
 * and inner hyphens, each 1..63 characters, 253 in all; an IPv4 address passes too), the port
 * 1..65535 without leading zeros. Nothing else: no scheme, path, user, spaces or brackets.
 */
export function isHubHost(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const match = /^([^:]{1,253})(?::([1-9][0-9]{0,4}))?$/.exec(value);
  if (!match) return false;
  const [, host, port] = match;
  if (port !== undefined && Number(port) > 65535) return false;
  return host!.split('.').every((label) => DNS_LABEL.test(label));
}

/** The assignment, or why it cannot be used (as a protocol error says it). */
export function checkedAssignment(hubHost: unknown, deviceId: unknown): { hubHost: string; deviceId: string } | string {
  if (typeof hubHost !== 'string' || hubHost === '' || typeof deviceId !== 'string' || deviceId === '') return 'without a hub and device id';
  if (!isHubHost(hubHost)) return 'with a hub that is not a host[:port]';
  if (!isDeviceId(deviceId)) return `with a device id that is not 1..${MAX_DEVICE_ID_LENGTH} of IoT Hub's characters (';' excluded)`;
  return { hubHost, deviceId };
}
