/**
 * Plug and Play for one device: the registries (device lifetime) and the session feature that
 * serves them on each hub connection.
 */
import type { SessionFeature } from '../actors/hub';
import type { Clock } from '../clock';
import { Commands, type CommandSettings } from './commands';
import { OfflineCommands, type OfflineInboxSource } from './offline';
import { WritableProperties } from './properties';
import { ReportedQueue, reportedQueuePath } from './reported';
import { createPnpSessionFeature } from './session';
import type { PartLogger } from '../logger';

export * from './types';
export { MAX_COMMAND_PAYLOAD_BYTES, REPROVISION_COMMAND } from './commands';
export { DEFAULT_MIGRATION_COMPONENT, DEVICE_MIGRATION_INTERFACE_ID, DEVICE_MOVE_COMMAND, InvalidDeviceMoveError, parseDeviceMove, type DeviceMoveRequest } from './migration';
export { MAX_REPORTED_BYTES } from './reported';

export interface PnpSettings {
  clock: Clock;
  logger: PartLogger;
  commandTimeoutMs: number;
  /** A writable-property handler still running after this is acknowledged 500. */
  propertyHandlerTimeoutMs: number;
  twinTimeoutMs: number;
  /**
   * With a data directory, pending reported properties survive a restart, and offline commands
   * survive a crash during their handler (the command inbox).
   */
  dataDir?: string;
  registrationId: string;
  /** Takes the device to Reprovisioning (the built-in `Reprovision` command). */
  reprovision(): void;
  /** The built-in `DeviceMove` (option `migration`). */
  deviceMove?: CommandSettings['deviceMove'];
  /** The device's own resilience component: reported in full at a connection to another hub, not remembered for a move. */
  resilienceComponent?: string;
}

export interface Pnp {
  feature: SessionFeature;
  reported: ReportedQueue;
  properties: WritableProperties;
  commands: Commands;
  offline: OfflineCommands;
}

/** The SQLite inbox of offline commands, loaded for a device with a data directory only. */
function durableInbox(dataDir: string, registrationId: string, clock: Clock): OfflineInboxSource {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { commandInboxPath, openCommandInbox } = require('../store/command-inbox') as typeof import('../store/command-inbox');
  return { path: commandInboxPath(dataDir, registrationId), open: () => openCommandInbox(dataDir, registrationId, { clock }) };
}

export function createPnp(settings: PnpSettings): Pnp {
  const logger = settings.logger.child({ module: 'pnp' });
  const reported = new ReportedQueue(
    logger,
    settings.dataDir ? reportedQueuePath(settings.dataDir, settings.registrationId) : undefined,
    settings.resilienceComponent,
  );
  const properties = new WritableProperties(reported, logger, { clock: settings.clock, handlerTimeoutMs: settings.propertyHandlerTimeoutMs });
  const commands = new Commands({
    timeoutMs: settings.commandTimeoutMs,
    clock: settings.clock,
    logger,
    reprovision: settings.reprovision,
    ...(settings.deviceMove ? { deviceMove: settings.deviceMove } : {}),
  });
  const { dataDir, registrationId } = settings;
  const offline = new OfflineCommands(commands, logger, dataDir ? durableInbox(dataDir, registrationId, settings.clock) : undefined);
  const feature = createPnpSessionFeature({
    clock: settings.clock,
    logger,
    twinTimeoutMs: settings.twinTimeoutMs,
    reported,
    properties,
    commands,
    offline,
  });
  return { feature, reported, properties, commands, offline };
}
