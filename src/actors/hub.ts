/**
 * The hub actors: one azure-iot-device Client per connection epoch.
 *
 * What the SDK does behind an outer state machine's back, and what we do about it
 * (see shared/reference/azure-sdk-facts.md):
 * - its default retry policy hides outages for minutes: `NoRetry`, the machine decides;
 * - `sendEvent` and twin calls silently reconnect a dead client to its old hub: a client is
 *   used only inside its own epoch's session and is discarded after it fails;
 * - `close()` can hang on un-acked publishes: every close has a timeout;
 * - a silently dead hub is seen only by keepalive: set low, in the one `setOptions` call with the CA;
 * - a hub that keeps the link but withholds PUBACKs is seen only by the SDK's PUBACK timeout
 *   (30 s, checked every 10 s): both are set per device (see `sdkMqttBase`).
 */
import { NoRetry } from 'azure-iot-common';
import { Client, Message } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { MqttBase } from 'azure-iot-mqtt-base';
import type { DeviceEvent, HubAttemptInput } from '../../machines/device.machine';
import { monotonicNow, withDeadline, type Clock } from '../clock';
import { toFailure } from '../policy/classify';
import type { Failure } from '../policy/types';
import type { Outbox, OutboxMessage } from '../store/outbox';
import { COMPONENT_PROPERTY, CONTENT_ENCODING, CONTENT_TYPE, isMessagePublishError, telemetryProblem } from '../pnp/telemetry';
import { Credentials, deviceKeyOf, withEitherKey, type Credential } from './credentials';
import { withServiceTime, type ServiceTime } from './service-time';
import type { CallbackWork, PromiseWork } from './work';
import { sharedTlsMqttProvider, type MqttProvider } from './tls';
import { directMqttPath, type NetworkPath } from './transport';
import { mqttClientOf, overrideSasSigning, setPublishCheckInterval } from './sdk-internals';
import { assertCertificateCurrent } from './x509';
import { PendingWork } from '../pending-work';
import type { PartLogger } from '../logger';

export interface HubSettings {
  registrationId: string;
  /** The device's keys: a refused key is tried once with the other of its pair. */
  credentials: Credentials;
  modelId?: string;
  ca?: string;
  /** MQTT or MQTT over WebSockets (and the proxy): the device's one NetworkPath. Default: plain MQTT. */
  network?: NetworkPath;
  keepaliveSeconds: number;
  /** PUBACK deadline of a QoS 1 publish (the SDK's own timeout); a miss ends the session. */
  publishTimeoutSeconds: number;
  connectTimeoutMs: number;
  closeTimeoutMs: number;
  /** The service's time: SAS tokens expire in it. Default: the device clock, never corrected. */
  serviceTime?: ServiceTime;
  /** SAS token lifetime and renewal margin; renewal is a silent reconnect inside the SDK. */
  tokenValiditySeconds: number;
  tokenRenewalMarginSeconds: number;
  /** Telemetry messages in flight (awaiting PUBACK) at once. */
  sendWindow: number;
  clock: Clock;
  logger: PartLogger;
  outbox: Outbox;
  /**
   * Every message in `outbox` passed sendTelemetry's check in this process (the device's own
   * in-memory outbox), which measures the topic for the longest device id an assignment may
   * hold: the pump does not check them again. A durable or given outbox may hold messages from
   * elsewhere (another version, by hand) and is checked message by message.
   */
  outboxCheckedAtSend?: boolean;
  onDelivered(messageId: string): void;
  /** Each publish of a telemetry message (its outbox seq), before its PUBACK (a message published twice was resent). */
  onPublished?(seq: number): void;
}

/** What a session feature gets: the SDK client of ONE connection epoch, valid until its cleanup runs. */
export interface HubSession {
  client: Client;
  /**
   * The MQTT transport under `client` (twin GET/PATCH, desired-patch subscription, methods and C2D
   * at the transport level, where the status and the order of operations are ours to control).
   */
  transport: Mqtt;
  epoch: number;
  deviceId: string;
  /**
   * Report that an operation of this session failed for good (twin timeout, failed subscription):
   * the session ends as HUB_LOST with the classified error. Ignored once the session has ended.
   */
  lost(error: unknown): void;
}

/**
 * A feature that lives for one hub session (twin sync, commands, ...). Returns its cleanup.
 * After the cleanup runs it must never touch `client` or `transport` again: the SDK silently
 * reconnects a discarded client to its old hub.
 *
 * `inbound`, when present, attaches the feature's listeners for what the hub sends (C2D, method
 * requests, twin messages) to the transport before `open()`: a hub that kept the device's MQTT
 * session (IoT Hub does, the SDK connects with clean=false) delivers queued C2D and waiting
 * method requests right after the CONNACK, possibly in the same read, before the session starts;
 * mqtt.js acknowledges a C2D message nobody listened for and it is gone. It must only listen (the
 * transport may not be connected yet); its cleanup runs when the client is discarded. `lost` ends
 * the session that follows (or the one running) like `HubSession.lost`.
 */
export type SessionFeature = ((session: HubSession) => () => void) & {
  inbound?(connection: HubSession): () => void;
};

interface OpenClient {
  client: Client;
  transport: Mqtt;
  /** The client's token source: its renewal timer must be stopped when the client is discarded. */
  tokens: TokenRenewal;
  epoch: number;
  /** A loss observed after open() resolved but before the session actor took over. */
  lostEarly?: Failure;
  onLost?: (failure: Failure) => void;
  /** Cleanups of the features' inbound listeners, run when the client is discarded. */
  inboundCleanups: Array<() => void>;
}

/** The SDK checks its PUBACK deadlines every 10 s; a shorter deadline gets a check every half of it (≥ 1 s). */
export function publishCheckIntervalMs(publishTimeoutSeconds: number): number {
  return Math.min(10_000, Math.max(1000, (publishTimeoutSeconds * 1000) / 2));
}

/**
 * The MQTT base the hub transport runs on, with our PUBACK deadline. `setTimeout` is the SDK's
 * own (whole seconds: it stamps publishes with floor(now / 1000), so a publish may time out up to
 * ~1.5 s early). The check interval has no API: it is a field of the pinned SDK's on-the-wire
 * container (azure-iot-mqtt-base 1.13.3); left at 10 s if that field is not where we expect it.
 * A withheld PUBACK ends the session between T − 1.5 s and T + 0.5 s + publishCheckIntervalMs(T).
 */
export function sdkMqttBase(publishTimeoutSeconds: number, provider: MqttProvider = sharedTlsMqttProvider()): MqttBase {
  const base = new MqttBase(provider);
  base.setTimeout(publishTimeoutSeconds);
  setPublishCheckInterval(base, publishCheckIntervalMs(publishTimeoutSeconds));
  return base;
}

/**
 * `provider` with the device's trust list in every connection's options (the MqttBase passes
 * `ca` on when it has one; it has none here). The trust list does not go through
 * `client.setOptions`: the SDK first tries a `ca` as a file name (azure-iot-device 1.18.4,
 * internal_client.js `setOptions`: `fs.readFile(options.ca)`, the PEM itself when that fails), and
 * with the default roots in it the list is ~217 KB: each connect paid an open() of a 217 KB path,
 * its copies and a 217 KB error message, ~0.2 MB of heap and more of native memory, freed at once
 * but kept by the allocator as RSS across a herd's connects.
 */
export function withTrustList(provider: MqttProvider, ca: string | undefined): MqttProvider {
  if (ca === undefined) return provider;
  return { connect: (uri, options) => provider.connect(uri, options.ca === undefined ? { ...options, ca } : options) };
}

/** What the SDK's SharedAccessKeyAuthenticationProvider offers to end its renewal timer. */
interface TokenRenewal {
  stop(): void;
}

/**
 * Close with a timeout (`close()` can hang forever while QoS 1 publishes are un-acked), then
 * stop the client's token renewal whatever happened. The SDK stops that timer only when its own
 * state machine reaches 'disconnected', which a forced end, a connect that never completed or
 * a close that failed may never do; the timer (45 min by default) then keeps the whole discarded
 * client, its socket state and buffers alive: the chaos soak's heap held ~1,000 dead clients for
 * 200 devices after 45 minutes.
 */
function closeQuietly(entry: OpenClient, clock: Clock, timeoutMs: number, logger: PartLogger): Promise<void> {
  const closing = entry.client.close().then(
    () => undefined,
    (error: Error) => logger.debug({ err: error.message }, 'hub client close failed'),
  );
  return withDeadline(clock, closing, timeoutMs, () => new Error('close timed out'))
    .catch(() => {
      logger.warn({ timeoutMs }, 'hub client close timed out; dropping its connection');
      // The SDK offers no forced close, and an abandoned socket would keep the process alive:
      // end the mqtt.js client under it.
      try {
        mqttClientOf(entry.transport)?.end(true);
      } catch (error) {
        logger.debug({ err: (error as Error).message }, 'forced close failed');
      }
    })
    .finally(() => entry.tokens.stop());
}

/** Build the SDK message: the stamped properties travel as they were captured. */
function toSdkMessage(message: OutboxMessage): Message {
  const sdkMessage = new Message(message.body);
  sdkMessage.messageId = message.messageId;
  sdkMessage.contentType = CONTENT_TYPE;
  sdkMessage.contentEncoding = CONTENT_ENCODING;
  if (message.component) sdkMessage.properties.add(COMPONENT_PROPERTY, message.component);
  const { properties } = message;
  for (const key of Object.keys(properties)) sdkMessage.properties.add(key, properties[key]!);
  return sdkMessage;
}

/**
 * Sends the outbox in capture order while its session lives, `sendWindow` at a time.
 * A message leaves the outbox only on PUBACK; on failure it stays for the next session.
 */
/** Outbox messages read ahead by the telemetry pump. */
const PREFETCH = 256;

/**
 * Tries of a message whose publishing fails for a reason that is not the connection (an encoding
 * error: see isMessagePublishError) before it is dropped as `unsendable`. Such a failure comes
 * back every time and the message would hold back everything after it, across restarts; a few
 * tries cover a fluke. Each failed try also ends the session: the encoder may have written half a
 * packet on the connection.
 */
export const MAX_MESSAGE_PUBLISH_TRIES = 3;

/** Acknowledged messages removed from a bulk-removing outbox in one transaction, at most waited for. */
const ACK_FLUSH_COUNT = 64;

class TelemetryPump {
  private cursor = 0;
  private inFlight = 0;
  private stopped = false;
  /**
   * Messages read ahead from the outbox (capture order, all after `cursor`): one outbox query per
   * PREFETCH messages instead of one per PUBACK (a SQLite SELECT each). Emptied whenever the
   * outbox drops messages, so a dropped message is never sent from here.
   */
  private ahead: OutboxMessage[] = [];
  private aheadIndex = 0;
  /** PUBACKed ids waiting for one bulk removal (see `acknowledged`). */
  private acked: string[] = [];
  private flushPending = false;
  private readonly unsubscribe: Array<() => void>;

  constructor(
    private readonly client: Client,
    private readonly settings: HubSettings,
    private readonly onFailure: (error: unknown) => void,
    /** The topic is measured for this device id. */
    private readonly deviceId: string,
    /** Failed tries by message id, kept across the sessions of the device (see MAX_MESSAGE_PUBLISH_TRIES). */
    private readonly publishFailures: Map<string, number>,
  ) {
    this.unsubscribe = [
      settings.outbox.onAdded(() => this.fill()),
      settings.outbox.onDropped(() => {
        this.ahead = [];
        this.aheadIndex = 0;
      }),
    ];
  }

  /**
   * Sends what the window allows. Never throws: it runs inside `sendTelemetry` (onAdded), PUBACK
   * continuations and the session's start, so an outbox that cannot be read (StorageError) ends
   * the session instead (classified, the machine reconnects; the messages stay in the outbox).
   */
  fill(): void {
    try {
      this.fillWindow();
    } catch (error) {
      this.fail(error);
    }
  }

  private fail(error: unknown): void {
    if (this.stopped) {
      this.settings.logger.warn({ err: (error as Error).message }, 'telemetry pump failed after its session ended');
      return;
    }
    this.onFailure(error);
  }

  private fillWindow(): void {
    while (!this.stopped && this.inFlight < this.settings.sendWindow) {
      if (this.aheadIndex >= this.ahead.length) {
        this.ahead = this.settings.outbox.after(this.cursor, Math.max(PREFETCH, this.settings.sendWindow));
        this.aheadIndex = 0;
        if (this.ahead.length === 0) return;
      }
      this.send(this.ahead[this.aheadIndex++]!);
    }
  }

  private send(message: OutboxMessage): void {
    this.cursor = message.seq;
    // Refused by sendTelemetry, so stored by another version or by hand: it would fail (or make
    // the hub close the connection) on every try. The drop empties `ahead`: the loop reads on.
    const problem = this.settings.outboxCheckedAtSend ? undefined : telemetryProblem(message, this.deviceId);
    if (problem) {
      this.dropUnsendable(message.messageId, problem.message);
      return;
    }
    this.inFlight++;
    this.settings.onPublished?.(message.seq);
    let publishing: Promise<unknown>;
    try {
      publishing = this.client.sendEvent(toSdkMessage(message));
    } catch (error) {
      publishing = Promise.reject(error);
    }
    publishing.then(
      () => {
        this.inFlight--;
        try {
          this.acknowledged(message.messageId);
        } catch (error) {
          // E.g. the outbox could not remove it: it stays and is sent again (same id) next session.
          this.fail(error);
          return;
        }
        this.fill();
      },
      (error: unknown) => {
        this.inFlight--;
        if (this.stopped) return;
        if ((error as Error | undefined)?.name === 'MessageTooLargeError') {
          // The SDK refuses such a body before publishing, every time: the connection is intact.
          this.dropUnsendable(message.messageId, `the SDK refused it: ${(error as Error).message}`);
          this.fill();
          return;
        }
        if (isMessagePublishError(error)) this.failedToPublish(message.messageId, error as Error);
        this.onFailure(error);
      },
    );
  }

  /** One more failed try of a message the connection is not to blame for; the last one drops it. */
  private failedToPublish(messageId: string, error: Error): void {
    const tries = (this.publishFailures.get(messageId) ?? 0) + 1;
    if (tries < MAX_MESSAGE_PUBLISH_TRIES) {
      this.publishFailures.set(messageId, tries);
      this.settings.logger.warn({ messageId, tries, err: error.message }, 'telemetry message failed to publish; tried again on the next connection');
      return;
    }
    this.publishFailures.delete(messageId);
    this.dropUnsendable(messageId, `publishing failed ${tries} times (${error.name}: ${error.message})`);
  }

  private dropUnsendable(messageId: string, detail: string): void {
    try {
      this.settings.outbox.drop(messageId, 'unsendable', detail);
    } catch (error) {
      // Still in the outbox (it could not be removed): tried again next session, never lost silently.
      this.settings.logger.warn({ messageId, err: (error as Error).message }, 'could not drop an unsendable telemetry message');
    }
  }

  /**
   * A PUBACK: the message leaves the outbox, then `delivered`. With an outbox that can remove in
   * bulk (SQLite), the PUBACKs of one event-loop turn are removed in one transaction: one WAL
   * commit per burst instead of one per message. A crash in between re-sends them (at least once).
   */
  private acknowledged(messageId: string): void {
    const { outbox } = this.settings;
    if (this.publishFailures.size > 0) this.publishFailures.delete(messageId);
    if (!outbox.removeMany) {
      if (outbox.remove(messageId)) this.settings.onDelivered(messageId);
      return;
    }
    this.acked.push(messageId);
    if (!this.flushPending) this.scheduleFlush(-1);
  }

  /**
   * The removal waits while PUBACKs keep coming (each turn of the event loop brings a burst, and
   * a commit costs about as much as the deletes of a burst): it runs in the first turn that
   * brought none, when nothing is in flight, or once ACK_FLUSH_COUNT wait. No timer: bounded by
   * the loop's turns and the count.
   */
  private scheduleFlush(waitingBefore: number): void {
    this.flushPending = true;
    setImmediate(() => {
      const waiting = this.acked.length;
      if (!this.stopped && waiting > waitingBefore && waiting < ACK_FLUSH_COUNT && this.inFlight > 0) {
        this.scheduleFlush(waiting);
        return;
      }
      try {
        this.flushAcknowledged();
      } catch (error) {
        this.fail(error);
      }
    });
  }

  private flushAcknowledged(): void {
    this.flushPending = false;
    if (this.acked.length === 0) return;
    const ids = this.acked;
    this.acked = [];
    let removed: string[];
    try {
      removed = this.settings.outbox.removeMany!(ids);
    } catch (error) {
      // Still in the outbox: sent again in a later session (at least once), never lost.
      this.settings.logger.warn({ err: (error as Error).message, count: ids.length }, 'could not remove acknowledged telemetry');
      return;
    }
    for (const id of removed) this.settings.onDelivered(id);
  }

  stop(): void {
    this.stopped = true;
    this.ahead = [];
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    try {
      this.flushAcknowledged(); // before the outbox can be closed
    } catch (error) {
      this.fail(error);
    }
  }
}

/** The hub actors' work: one registry of open clients shared by the three of them. */
/**
 * The SDK computes a token's expiry as device time + validity, and keeps that (device-time)
 * expiry to schedule renewals. Shifting only what is signed keeps its renewal schedule right
 * while the hub, which checks expiry in its own time, gets a token valid for the whole lifetime.
 */
function signInServiceTime(provider: unknown, serviceTime: ServiceTime): void {
  // X.509: nothing is signed, nothing is overridden.
  overrideSasSigning(provider, (sign) => (resourceUri, expiry, callback) => sign(resourceUri, expiry + Math.round(serviceTime.offsetMs / 1000), callback));
}

export function hubWork(settings: HubSettings, features: SessionFeature[] = []) {
  const { clock, logger } = settings;
  const open = new Map<number, OpenClient>();
  const closing = new PendingWork();
  const publishFailures = new Map<string, number>();
  const network = settings.network ?? directMqttPath(logger);

  /** A cleanup that throws is logged: the rest of the teardown (and the client's close) still runs. */
  function runCleanup(cleanup: () => void, epoch: number): void {
    try {
      cleanup();
    } catch (error) {
      logger.error({ epoch, err: (error as Error).message }, 'session cleanup failed');
    }
  }

  function discard(epoch: number): void {
    const entry = open.get(epoch);
    if (!entry) return;
    open.delete(epoch);
    entry.client.removeAllListeners('disconnect');
    for (const cleanup of entry.inboundCleanups.splice(0)) runCleanup(cleanup, epoch);
    closing.track(closeQuietly(entry, clock, settings.closeTimeoutMs, logger));
  }

  const openHub: PromiseWork<{ connectedAt: number }, HubAttemptInput> = ({ input, signal }) =>
    withEitherKey(
      settings.credentials,
      // No time probe here: a refused token makes the machine ask DPS (the status lookup), whose
      // Date header corrects the clock for the next connect; a probe would be a second lookup.
      (credential) => (settings.serviceTime ? withServiceTime(settings.serviceTime, () => openWith(credential, input, signal)) : openWith(credential, input, signal)),
      (from, to) => logger.warn({ epoch: input.epoch, from, to }, `the hub refused the ${from} key; trying the ${to} key`),
    );

  async function openWith(credential: Credential, input: HubAttemptInput, signal: AbortSignal): Promise<{ connectedAt: number }> {
    const { assignment, epoch } = input;
    // X.509: the client certificate authenticates (setOptions below); no key, no token to renew.
    const x509 = 'x509' in credential ? credential.x509 : undefined;
    const secret = x509 ? 'x509=true' : `SharedAccessKey=${deviceKeyOf(credential, settings.registrationId)}`;
    // Keep the transport the client builds: session features use it directly (see HubSession).
    let transport: Mqtt | undefined;
    let tokens: TokenRenewal | undefined;
    const client = Client.fromConnectionString(
      `HostName=${assignment.hubHost};DeviceId=${assignment.deviceId};${secret}`,
      function CapturingMqtt(authenticationProvider: ConstructorParameters<typeof Mqtt>[0]) {
        const provider = authenticationProvider as unknown as Partial<TokenRenewal>;
        // The SDK's X.509 provider has no renewal timer to stop.
        tokens = typeof provider.stop === 'function' ? (provider as TokenRenewal) : { stop: () => undefined };
        if (settings.serviceTime) signInServiceTime(authenticationProvider, settings.serviceTime);
        transport = network.hubTransport(authenticationProvider, sdkMqttBase(settings.publishTimeoutSeconds, withTrustList(network.mqttProvider(), settings.ca)));
        return transport;
      } as unknown as typeof Mqtt,
    );
    client.setRetryPolicy(new NoRetry());
    const entry: OpenClient = { client, transport: transport!, tokens: tokens!, epoch, inboundCleanups: [] };
    open.set(epoch, entry);
    const reportLoss = (failure: Failure) => {
      if (entry.onLost) entry.onLost(failure);
      else entry.lostEarly ??= failure;
    };
    // Errors after the epoch is over must never crash the process.
    client.on('error', (error: Error) => logger.debug({ epoch, err: error.message }, 'hub client error'));
    client.on('disconnect', (error?: Error) => {
      const cause = (error as { transportObj?: unknown } | undefined)?.transportObj ?? error ?? new Error('disconnected');
      reportLoss(toFailure(cause, 'hub-session', monotonicNow(clock)));
    });
    signal.addEventListener('abort', () => discard(epoch), { once: true });
    try {
      // Before open(): what a resumed MQTT session delivers right after the CONNACK has listeners.
      const connection: HubSession = {
        client,
        transport: entry.transport,
        epoch,
        deviceId: assignment.deviceId,
        lost: (error) => reportLoss(toFailure(error, 'hub-session', monotonicNow(clock))),
      };
      for (const feature of features) {
        if (feature.inbound) entry.inboundCleanups.push(feature.inbound(connection));
      }
      if (x509) assertCertificateCurrent(x509, settings.serviceTime?.nowMs() ?? clock.now()); // the service judges validity by its clock
      // No `ca` here: it goes in through the MQTT provider (see withTrustList).
      await client.setOptions({
        modelId: settings.modelId,
        keepalive: settings.keepaliveSeconds,
        // The SDK refuses token renewal options on an X.509 client.
        ...(x509
          ? { cert: x509.cert, key: x509.key, ...(x509.passphrase === undefined ? {} : { passphrase: x509.passphrase }) }
          : {
              tokenRenewal: {
                tokenValidTimeInSeconds: settings.tokenValiditySeconds,
                tokenRenewalMarginInSeconds: settings.tokenRenewalMarginSeconds,
              },
            }),
      } as Parameters<Client['setOptions']>[0]);
      await withDeadline(clock, client.open(), settings.connectTimeoutMs, () => {
        const timeout = new Error(`hub did not accept the connection within ${settings.connectTimeoutMs} ms`);
        timeout.name = 'TimeoutError';
        return timeout;
      });
    } catch (error) {
      discard(epoch);
      // An unreachable MQTT port switches `auto` to WebSockets (a cancelled attempt proves nothing).
      throw toFailure(signal.aborted ? error : network.explainConnectFailure(error, 'hub-connect'), 'hub-connect', monotonicNow(clock));
    }
    return { connectedAt: monotonicNow(clock) };
  }

  const hubSession: CallbackWork<HubAttemptInput> = ({ input, sendBack }) => {
    const { epoch } = input;
    const entry = open.get(epoch);
    let ended = false;
    const lose = (failure: Failure) => {
      if (ended) return;
      ended = true;
      const event: DeviceEvent = { type: 'HUB_LOST', epoch, failure };
      sendBack(event);
    };
    if (!entry) {
      lose(toFailure(new Error('hub client vanished before the session began'), 'hub-session', monotonicNow(clock)));
      return () => undefined;
    }
    const loseWith = (error: unknown) => lose(toFailure(error, 'hub-session', monotonicNow(clock)));
    const session: HubSession = {
      client: entry.client,
      transport: entry.transport,
      epoch,
      deviceId: input.assignment.deviceId,
      lost: loseWith,
    };
    const pump = new TelemetryPump(entry.client, settings, loseWith, input.assignment.deviceId, publishFailures);
    entry.onLost = lose;
    const cleanups: Array<() => void> = [];
    if (entry.lostEarly) lose(entry.lostEarly);
    else {
      // A feature that throws ends the session (classified), never the device actor: an error
      // thrown from here would put the machine in XState's error status.
      try {
        // Features start only on a live client: their first calls would reconnect a dead one.
        for (const feature of features) cleanups.push(feature(session));
        pump.fill();
      } catch (error) {
        loseWith(error);
      }
    }
    return () => {
      ended = true;
      pump.stop();
      for (const cleanup of cleanups) runCleanup(cleanup, epoch);
      discard(epoch);
    };
  };

  /** Disconnecting: close what is open and wait for every pending close (each bounded). */
  const closeHub: PromiseWork<void, { epoch: number }> = async () => {
    for (const epoch of [...open.keys()]) discard(epoch);
    await closing.settled();
  };

  return { openHub, hubSession, closeHub };
}
