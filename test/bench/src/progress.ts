/**
 * One line on stderr, redrawn in place, only when stderr is a TTY (and not
 * --no-progress): CI logs get the result rows and nothing else.
 */
const WIDTH = 30;
const REDRAW_MS = 200;

export class Progress {
  private last = 0;
  private drawn = false;
  constructor(private readonly enabled: boolean) {}

  update(label: string, done: number, total: number, t0: number): void {
    if (!this.enabled) return;
    const t = performance.now();
    if (t - this.last < REDRAW_MS) return;
    this.last = t;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const bar = "#".repeat(Math.round(frac * WIDTH)).padEnd(WIDTH, ".");
    const rate = done / Math.max(0.001, (t - t0) / 1000);
    process.stderr.write(`\r\x1b[2K${label} [${bar}] ${done.toLocaleString("en-US")}/${total.toLocaleString("en-US")} ${Math.round(rate).toLocaleString("en-US")}/s`);
    this.drawn = true;
  }

  note(text: string): void {
    if (!this.enabled) return;
    process.stderr.write(`\r\x1b[2K${text}`);
    this.drawn = true;
  }

  clear(): void {
    if (!this.enabled || !this.drawn) return;
    process.stderr.write("\r\x1b[2K");
    this.drawn = false;
  }
}
