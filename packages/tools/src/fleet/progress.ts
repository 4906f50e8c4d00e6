/**
 * A small progress bar (no dependency): one line redrawn in place on a TTY; on a pipe or a file,
 * a plain line at most every `plainEveryMs` (and the last one), so logs stay readable.
 */
export class ProgressBar {
  private lastPlain = 0;
  private lastLine = '';
  private finished = false;

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
    private readonly total: number,
    private readonly width = 30,
    private readonly plainEveryMs = 2000,
  ) {}

  /** Redraws with `done` of `total` and a text after the bar. */
  update(done: number, text: string, force = false): void {
    if (this.finished) return;
    const ratio = this.total > 0 ? Math.min(1, Math.max(0, done / this.total)) : 1;
    const filled = Math.round(ratio * this.width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(this.width - filled)}] ${String(done).padStart(String(this.total).length)}/${this.total} ${text}`;
    if (this.out.isTTY) {
      const columns = this.out.columns ?? 120;
      const line = bar.length >= columns ? bar.slice(0, columns - 1) : bar;
      if (line === this.lastLine && !force) return;
      this.lastLine = line;
      this.out.write(`\r\x1b[2K${line}`);
      return;
    }
    const now = Date.now();
    if (!force && now - this.lastPlain < this.plainEveryMs) return;
    this.lastPlain = now;
    this.out.write(`${bar}\n`);
  }

  /** Final redraw and a newline on a TTY. */
  finish(done: number, text: string): void {
    this.update(done, text, true);
    if (this.out.isTTY) this.out.write('\n');
    this.finished = true;
  }
}
