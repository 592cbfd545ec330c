// A one-line progress bar on stderr: step, percent, loss, images/s and ETA. Redrawn in place on a terminal;
// elsewhere (CI logs, pipes) a plain line every few percent.

export class Progress {
  private readonly t0 = Date.now();
  private lastLoss = NaN;
  private lastPrinted = -1;
  private readonly tty = !!process.stderr.isTTY;

  constructor(private readonly total: number, private readonly start: number, private readonly batchSize: number, private readonly enabled = true) {}

  update(step: number, loss?: number): void {
    if (loss !== undefined) this.lastLoss = loss;
    if (!this.enabled) return;
    const pct = Math.floor((100 * step) / this.total);
    if (!this.tty && pct < this.lastPrinted + 5 && step !== this.total) return;
    if (this.tty && step !== this.total && Date.now() - this.lastDraw < 200) return;
    this.lastDraw = Date.now();
    this.lastPrinted = pct;
    const secs = (Date.now() - this.t0) / 1000;
    const done = step - this.start;
    const ips = done > 0 ? (done * this.batchSize) / secs : 0;
    const eta = done > 0 ? ((this.total - step) * secs) / done : NaN;
    const width = 24;
    const filled = Math.round((width * step) / this.total);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const line = `${bar} ${String(pct).padStart(3)}% step ${step}/${this.total} loss ${Number.isFinite(this.lastLoss) ? this.lastLoss.toFixed(4) : '-'} ` +
      `${ips.toFixed(0)} img/s ETA ${fmtTime(eta)}`;
    process.stderr.write(this.tty ? `\r${line}\x1b[K` : line + '\n');
  }

  private lastDraw = 0;

  finish(): void {
    if (this.tty && this.enabled) process.stderr.write('\n');
  }
}

export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const ss = String(Math.floor(s % 60)).padStart(2, '0');
  return h ? `${h}:${String(m % 60).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
