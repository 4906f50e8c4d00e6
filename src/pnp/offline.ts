/**
 * IoT Central offline commands (C2D messages with `method-name`): nobody waits for an answer, so
 * the only promise is that the handler runs. The hub forgets a message once it has our PUBACK,
 * and mqtt.js PUBACKs right after the synchronous 'message' event, before an async handler ends.
 *
 * With a command inbox (a data directory): `receive` stores the command inside that event, so it
 * is durable before the PUBACK; the handler runs from the inbox and the command is marked done
 * when it settles (or is cut at the command timeout); `replay` runs what a crash left pending, at
 * the next start. At least once, never twice for the same message id while the inbox remembers it.
 * A command that was started `MAX_OFFLINE_ATTEMPTS` times without finishing (it takes the process
 * down every time?) is retired with an error instead of looping forever.
 *
 * Without one (no data directory) a command runs straight away: a crash during the handler loses
 * it (at most once), as with the bare SDK.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { CommandInbox, InboxCommand } from '../store/command-inbox';
import type { Commands } from './commands';
import { PendingWork } from '../pending-work';
import type { PartLogger } from '../logger';

export const MAX_OFFLINE_ATTEMPTS = 5;

export interface OfflineInboxSource {
  /** The inbox file: replay opens it only if it exists. */
  path: string;
  /** Opens it (lazily: a device that never gets an offline command never opens a database). */
  open(): CommandInbox;
}

export class OfflineCommands {
  private inbox: CommandInbox | null = null;
  private replayed = false;
  private closed = false;
  private readonly running = new PendingWork();

  constructor(
    private readonly commands: Commands,
    private readonly logger: PartLogger,
    private readonly source?: OfflineInboxSource,
  ) {}

  /** The inbox, opened on first use; undefined without a data directory. Throws StorageError. */
  private store(): CommandInbox | undefined {
    if (!this.source || this.closed) return undefined;
    this.inbox ??= this.source.open();
    return this.inbox;
  }

  /**
   * A C2D command arrived. Called synchronously inside the transport's 'message' event: whatever
   * is stored here is stored before mqtt.js sends the PUBACK.
   */
  receive(command: string, body: Buffer | undefined, messageId: string | undefined): void {
    let inbox: CommandInbox | undefined;
    try {
      inbox = this.store();
    } catch (error) {
      this.logger.error({ command, messageId, err: (error as Error).message }, 'command inbox unusable; running the offline command without crash protection');
    }
    if (!inbox) {
      this.run(command, body, messageId);
      return;
    }
    let result;
    try {
      // A message without an id cannot be deduplicated, but it can still survive a crash.
      result = inbox.accept({ messageId: messageId ?? `local-${randomUUID()}`, command, ...(body !== undefined ? { body } : {}) });
    } catch (error) {
      this.logger.error({ command, messageId, err: (error as Error).message }, 'could not store the offline command; running it without crash protection');
      this.run(command, body, messageId);
      return;
    }
    if (!result.accepted) {
      this.logger.info({ command, messageId, state: result.state }, 'offline command already received; not run again');
      return;
    }
    this.runStored(inbox, result.command);
  }

  /** Run what a previous process left pending (once per device, at start). */
  replay(): void {
    if (this.replayed || !this.source) return;
    this.replayed = true;
    if (!this.inbox && !existsSync(this.source.path)) return;
    let inbox: CommandInbox | undefined;
    let pending: ReturnType<CommandInbox['pending']>;
    try {
      inbox = this.store();
      if (!inbox) return;
      pending = inbox.pending();
    } catch (error) {
      this.logger.error({ err: (error as Error).message }, 'command inbox unusable; offline commands left pending by the last run are not replayed');
      return;
    }
    for (const problem of pending.bad) this.logger.warn({ err: problem.message }, 'unreadable offline command in the inbox; skipped');
    for (const command of pending.commands) {
      if (command.attempts >= MAX_OFFLINE_ATTEMPTS) {
        this.logger.error({ command: command.command, messageId: command.messageId, attempts: command.attempts }, 'offline command never finished; retired without running it again');
        this.complete(inbox, command.messageId, null);
        continue;
      }
      try {
        command.attempts = inbox.begin(command.messageId);
      } catch (error) {
        this.logger.warn({ messageId: command.messageId, err: (error as Error).message }, 'could not count an offline command attempt');
      }
      this.logger.info({ command: command.command, messageId: command.messageId, attempt: command.attempts }, 'replaying an offline command left pending by the last run');
      this.runStored(inbox, command);
    }
  }

  private runStored(inbox: CommandInbox, command: InboxCommand): void {
    this.run(command.command, command.body, command.messageId, (status) => this.complete(inbox, command.messageId, status));
  }

  private complete(inbox: CommandInbox, messageId: string, status: number | null): void {
    try {
      inbox.complete(messageId, status);
    } catch (error) {
      this.logger.warn({ messageId, err: (error as Error).message }, 'could not mark the offline command done; it may run again after a restart');
    }
  }

  private run(command: string, body: Buffer | undefined, messageId: string | undefined, settled?: (status: number) => void): void {
    const work = this.commands
      .invoke(command, body, { offline: true, ...(messageId !== undefined ? { requestId: messageId } : {}) })
      .then((outcome) => {
        settled?.(outcome.status); // done before `after` (Reprovision): it must not run again
        const level = outcome.status >= 400 ? 'warn' : 'info';
        this.logger[level]({ command, messageId, status: outcome.status, payload: outcome.status >= 400 ? outcome.payload : undefined }, 'offline command handled');
        outcome.after?.();
      })
      .catch((error: unknown) => this.logger.error({ command, messageId, err: error instanceof Error ? error.message : String(error) }, 'offline command failed'));
    this.running.track(work);
  }

  /** Pending and remembered-done commands in the inbox, once it is open (diagnostics, tests). */
  inboxCounts(): { pending: number; done: number } | undefined {
    return this.inbox?.counts();
  }

  /** Resolves when every offline command started so far has settled (tests, shutdown). */
  async idle(): Promise<void> {
    await this.running.settled();
  }

  /** Closes the inbox; handlers still running stay pending in it and run again at the next start. */
  close(): void {
    this.closed = true;
    this.inbox?.close();
    this.inbox = null;
  }
}
