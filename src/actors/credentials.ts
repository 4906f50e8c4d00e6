import { createHmac } from 'node:crypto';

/** How the device proves itself: a group enrollment key (derived per device) or its own key. */
export type Credential = { groupKey: string } | { deviceKey: string };

/** DPS group enrollment: device key = base64(HMAC-SHA256(base64decode(groupKey), registrationId)). */
export function deriveDeviceKey(groupKey: string, registrationId: string): string {
  return createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

/** The key this device signs with; the group key itself never leaves this function's caller. */
export function deviceKeyOf(credential: Credential, registrationId: string): string {
  return 'deviceKey' in credential ? credential.deviceKey : deriveDeviceKey(credential.groupKey, registrationId);
}
