export { createDevice, MAX_MESSAGE_BYTES } from './device';
export type { Device, DeviceActor, DeviceEvents, DeviceSnapshot, DeviceStateName, StateChange, TelemetryOptions } from './device';
export { ACTION_BY_CLASS, ACTION_BY_RULE, recommendedAction } from './stats';
export type { DeviceStats, RecommendedAction } from './stats';
export { RESILIENCE_INTERFACE_ID } from './pnp/resilience';
export { ATTRIBUTE as METRIC_ATTRIBUTES, DEVICE_STATES, INSTRUMENT as METRIC_INSTRUMENTS, METER_NAME } from './metrics';
export type { MetricsMeter } from './metrics';
export { deviceMachine } from '../machines/device.machine';
export type { Assignment, DeviceContext, DeviceEvent, DeviceInput } from '../machines/device.machine';
export type { DeviceOptions, StopOptions } from './options';
export { ConfigError, HubstateError, MessageRejectedError } from './errors';
export { classify, toFailure, redactSecrets } from './policy/classify';
export { nextDelay, resolvePolicy, DEFAULT_POLICY, PRESETS } from './policy/backoff';
export type { Classification, ErrorClass, Failure, Phase, RetryPolicy } from './policy/types';
export type { RetryPolicyInput } from './policy/backoff';
export type { TransportMode } from './actors/transport';
export { createLogger, guardDebugOutput } from './logger';
export { MemoryOutbox } from './store/outbox';
export type { DroppedMessage, Outbox, OutboxMessage } from './store/outbox';
export { credentialFingerprint, FileProvisioningCache, MemoryProvisioningCache } from './store/cache';
export type { CacheScope, CachedAssignment, ProvisioningCache } from './store/cache';
export { deriveDeviceKey } from './actors/credentials';
export type { HubSession, SessionFeature } from './actors/hub';
export {
  CommandError,
  MAX_COMMAND_PAYLOAD_BYTES,
  MAX_REPORTED_BYTES,
  PropertiesRejectedError,
  PropertyRejectedError,
  REPROVISION_COMMAND,
} from './pnp';
export type {
  CommandHandler,
  CommandOptions,
  CommandRequest,
  CommandResult,
  PrimitiveSchema,
  ReportOptions,
  ValueCheck,
  WritablePropertyContext,
  WritablePropertyHandler,
  WritablePropertyOptions,
  WritablePropertyResult,
} from './pnp';
export type { DroppedProperties } from './pnp/reported';
export { DEFAULT_MIGRATION_COMPONENT, DEVICE_MIGRATION_INTERFACE_ID, DEVICE_MOVE_COMMAND, InvalidDeviceMoveError, parseDeviceMove } from './pnp/migration';
export type { DeviceMoveRequest } from './pnp/migration';
export type { MigrationEvent } from './migration';
export type { Clock } from './clock';
export { monotonicNow, wallTimeOf } from './clock';
