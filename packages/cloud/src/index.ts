/**
 * hubstate-cloud: a local stand-in for Azure DPS and IoT Hub that the unmodified Azure IoT
 * Node SDK talks to over MQTT/TLS.
 *
 * ```ts
 * const cloud = await startLocalCloud({ hubs: 2 });
 * // device side: provisioningHost = cloud.provisioningHost, idScope = cloud.idScope,
 * //              key = cloud.deviceKey(regId), trust cloud.ca
 * cloud.manualFailover('dev-1', { ttlMs: 5000 });
 * await cloud.stop();
 * ```
 */
export { startLocalCloud, LocalCloud, type LocalCloudOptions, type IdScopeOptions, type AddedIdScope } from './cloud';
export { EmulatedDps, type InjectedDpsStatus } from './dps';
export { EmulatedHub } from './hub';
export type { TelemetryFilter } from './telemetry';
export type { EmulatorLogger } from './logger';
export type { ControlApi } from './control-api';
export * from './types';
export {
  deriveDeviceKey,
  createSasToken,
  hubSasToken,
  dpsSasToken,
  parseSasToken,
  verifySasToken,
  hubResource,
  dpsResource,
  hmacSha256Base64,
  type ParsedSas,
  type SasVerification,
  type SasRejection,
} from './sas';
export { waitFor, type WaitForOptions } from './wait';
export { LocalHttpError, localHttpListener } from './local-http';
export { registrationIdProblem } from './dps';
export { MAX_CONTROL_BODY_BYTES } from './control-api';
export { generateCertificates, type CloudCertificates } from './certs';
// Running a local cloud (or any service) in a child process, driven over IPC.
export { asyncCommands, connectService, forkService, serveService, type Async, type IpcChannel, type ServiceFactory } from './ipc';
export { CloudPki, type IssuedCertificate, type IssueOptions } from './x509';
