/**
 * Plug and Play for one device: the registries (device lifetime) and the session feature that
 * serves them on each hub connection.
 */
import type { Logger } from 'pino';
import type { SessionFeature } from '../actors/hub';
import type { Clock } from '../clock';
import { Commands } from './commands';
import { WritableProperties } from './properties';
import { ReportedQueue, reportedQueuePath } from './reported';
import { createPnpSessionFeature } from './session';

export * from './types';
export { MAX_COMMAND_PAYLOAD_BYTES, REPROVISION_COMMAND } from './commands';
export { MAX_REPORTED_BYTES } from './reported';

export interface PnpSettings {
  clock: Clock;
  logger: Logger;
  commandTimeoutMs: number;
  /** A writable-property handler still running after this is acknowledged 500. */
  propertyHandlerTimeoutMs: number;
  twinTimeoutMs: number;
  /** With a data directory, pending reported properties survive a restart. */
  dataDir?: string;
  registrationId: string;
  /** Takes the device to Reprovisioning (the built-in `Reprovision` command). */
  reprovision(): void;
}

export interface Pnp {
  feature: SessionFeature;
  reported: ReportedQueue;
  properties: WritableProperties;
  commands: Commands;
}

export function createPnp(settings: PnpSettings): Pnp {
  const logger = settings.logger.child({ module: 'pnp' });
  const reported = new ReportedQueue(logger, settings.dataDir ? reportedQueuePath(settings.dataDir, settings.registrationId) : undefined);
  const properties = new WritableProperties(reported, logger, { clock: settings.clock, handlerTimeoutMs: settings.propertyHandlerTimeoutMs });
  const commands = new Commands({
    timeoutMs: settings.commandTimeoutMs,
    clock: settings.clock,
    logger,
    reprovision: settings.reprovision,
  });
  const feature = createPnpSessionFeature({
    clock: settings.clock,
    logger,
    twinTimeoutMs: settings.twinTimeoutMs,
    reported,
    properties,
    commands,
  });
  return { feature, reported, properties, commands };
}
