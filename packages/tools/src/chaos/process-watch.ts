/**
 * Process-level failures during a run: unhandled rejections, uncaught exceptions (both also
 * scanned for secrets) and warnings, recorded while attached.
 */
import type { SecretScanner } from './secrets';

const MAX_WARNINGS = 50;

export class ProcessWatch {
  readonly unhandledRejections: string[] = [];
  readonly uncaughtExceptions: string[] = [];
  readonly warnings: string[] = [];
  /** Set once the scanner exists: errors before that have no secrets to look for. */
  scanner: SecretScanner | undefined;

  constructor(private readonly startedAt: number) {}

  private readonly onRejection = (reason: unknown) => {
    const text = this.describe(reason);
    this.unhandledRejections.push(text.slice(0, 1500));
    this.scanner?.scan(text, 'error');
  };

  /** Also for errors the run catches where an exception would otherwise escape (cleanup). */
  readonly onException = (error: Error) => {
    const text = this.describe(error);
    this.uncaughtExceptions.push(text.slice(0, 1500));
    this.scanner?.scan(text, 'error');
  };

  private readonly onWarning = (warning: Error) => {
    if (this.warnings.length < MAX_WARNINGS) this.warnings.push(`${warning.name}: ${warning.message}`.slice(0, 300));
  };

  attach(): void {
    process.on('unhandledRejection', this.onRejection);
    process.on('uncaughtException', this.onException);
    process.on('warning', this.onWarning);
  }

  detach(): void {
    process.off('unhandledRejection', this.onRejection);
    process.off('uncaughtException', this.onException);
    process.off('warning', this.onWarning);
  }

  // Kept with the top of the stack: a report must be enough to find where it came from.
  private describe(error: unknown): string {
    return (
      `at +${Date.now() - this.startedAt} ms: ` +
      (error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`).split('\n').slice(0, 8).join('\n') : String(error))
    );
  }
}
