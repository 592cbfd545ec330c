// A one-line progress bar on stderr: step, percent, loss, images/s and ETA. Redrawn in place on a terminal;
// elsewhere (CI logs, pipes) a plain line every few percent. The rate is measured from the first update on: the
// first step of a run (or of a resumed run) compiles every pipeline, which on lavapipe takes as long as hundreds of
// steps, so a rate since the start would put the ETA hours out for most of a long run.

/** Where the bar gets the time and writes its lines (tests pass their own). */
export interface ProgressIO {
  now(): number;
  write(text: string): void;
  tty: boolean;
}

const stderrIO = (): ProgressIO => ({ now: Date.now, write: (s) => void process.stderr.write(s), tty: !!process.stderr.isTTY });

export class Progress {
  private readonly t0: number;
  /** time and step of the first update: the rate's origin */
  private first: { t: number; step: number } | null = null;
  private lastLoss = NaN;
  private lastPrinted = -1;
  private lastDraw = -Infinity;

  constructor(
    private readonly total: number, private readonly start: number, private readonly batchSize: number,
    private readonly enabled = true, private readonly io: ProgressIO = stderrIO(),
  ) {
    this.t0 = io.now();
  }

  update(step: number, loss?: number): void {
    if (loss !== undefined) this.lastLoss = loss;
    if (!this.enabled) return;
    const now = this.io.now();
    // the first step's time (compilation included) is the origin; until a later step, the rate since the start
    const origin = this.first ?? (this.first = { t: now, step });
    const pct = Math.floor((100 * step) / this.total);
    if (!this.io.tty && pct < this.lastPrinted + 5 && step !== this.total) return;
    if (this.io.tty && step !== this.total && now - this.lastDraw < 200) return;
    this.lastDraw = now;
    this.lastPrinted = pct;
    const [from, steps] = step > origin.step ? [origin.t, step - origin.step] : [this.t0, step - this.start];
    const secs = (now - from) / 1000;
    const ips = steps > 0 && secs > 0 ? (steps * this.batchSize) / secs : NaN;
    const eta = Number.isFinite(ips) ? ((this.total - step) * this.batchSize) / ips : NaN;
    const width = 24;
    const filled = Math.round((width * step) / this.total);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const line = `${bar} ${String(pct).padStart(3)}% step ${step}/${this.total} loss ${Number.isFinite(this.lastLoss) ? this.lastLoss.toFixed(4) : '-'} ` +
      `${Number.isFinite(ips) ? ips.toFixed(0) : '-'} img/s ETA ${fmtTime(eta)}`;
    this.io.write(this.io.tty ? `\r${line}\x1b[K` : line + '\n');
  }

  finish(): void {
    if (this.io.tty && this.enabled) this.io.write('\n');
  }
}

export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const ss = String(Math.floor(s % 60)).padStart(2, '0');
  return h ? `${h}:${String(m % 60).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
