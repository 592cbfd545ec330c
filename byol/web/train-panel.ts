// The "Train" section of the page: runs a Trainer (the demo now, BYOL later), and turns what it reports into the
// step/loss/throughput/kNN figures, the loss curve, the preview grid and the checkpoint download. Everything it
// shows is also kept in a plain TrainingState that main.ts publishes as window.__byol.training.

import { drawImageGrid, drawLossCurve, type ImageBatch } from './plot.ts';
import type { Trainer, TrainReporter, TrainResult } from './trainer.ts';

export interface TrainingState {
  trainer: string;
  running: boolean;
  done: boolean;
  stopped: boolean;
  step: number;
  losses: number[];
  /** samples (images for BYOL) per second over the last steps; null before the second step */
  samplesPerSec: number | null;
  knn: number | null;
  status: string;
  error: string | null;
  checkpointReady: boolean;
  ms: number;
}

export interface TrainPanelElements {
  steps: HTMLInputElement;
  start: HTMLButtonElement;
  stop: HTMLButtonElement;
  download: HTMLButtonElement;
  step: HTMLElement;
  loss: HTMLElement;
  rate: HTMLElement;
  rateLabel: HTMLElement;
  knn: HTMLElement;
  lossCanvas: HTMLCanvasElement;
  previewCanvas: HTMLCanvasElement;
  previewCaption: HTMLElement;
  status: HTMLElement;
  name: HTMLElement;
  description: HTMLElement;
}

const RATE_WINDOW = 20; // steps over which samples/s is measured (the first step also compiles pipelines)

export class TrainPanel {
  readonly state: TrainingState;
  private result: TrainResult | null = null;
  private stopRequested = false;
  private lastDraw = 0;

  constructor(
    private trainer: Trainer,
    private el: TrainPanelElements,
    /** runs fn while no other engine work (the kernel checks) runs: the engine's tidy scopes are global */
    private exclusive: <T>(fn: () => Promise<T>) => Promise<T>,
  ) {
    this.state = {
      trainer: trainer.name, running: false, done: false, stopped: false, step: 0, losses: [], samplesPerSec: null, knn: null,
      status: '', error: null, checkpointReady: false, ms: 0,
    };
    el.name.textContent = trainer.name + '.';
    el.description.textContent = trainer.description;
    el.rateLabel.textContent = `${trainer.unit}/s`;
    el.steps.value = String(trainer.defaultSteps);
    el.start.onclick = () => void this.run(Number(el.steps.value) || trainer.defaultSteps);
    el.stop.onclick = () => {
      this.stopRequested = true;
      el.stop.disabled = true;
    };
    el.download.onclick = () => void this.download();
    drawLossCurve(el.lossCanvas, []);
  }

  /** Enables the start button once the device is ready. */
  enable(on: boolean): void {
    this.el.start.disabled = !on || this.state.running;
  }

  async run(steps: number): Promise<void> {
    if (this.state.running) return;
    const s = this.state;
    const el = this.el;
    this.result?.dispose();
    this.result = null;
    Object.assign(s, { running: true, done: false, stopped: false, step: 0, losses: [], samplesPerSec: null, knn: null, error: null, checkpointReady: false, ms: 0 });
    this.stopRequested = false;
    el.start.disabled = true;
    el.stop.disabled = false;
    el.download.disabled = true;
    const times: number[] = [];
    const samples: number[] = [];
    const t0 = performance.now();
    const panel = this;
    const reporter: TrainReporter = {
      step(loss: number, images: number) {
        s.step++;
        s.losses.push(loss);
        times.push(performance.now());
        samples.push(images);
        if (times.length > RATE_WINDOW + 1) times.shift(), samples.shift();
        if (times.length >= 2) {
          const n = samples.slice(1).reduce((a, b) => a + b, 0);
          s.samplesPerSec = n / ((times[times.length - 1] - times[0]) / 1000);
        }
        panel.draw(false);
      },
      preview(batch: ImageBatch, opts = {}) {
        drawImageGrid(el.previewCanvas, batch, { cols: opts.cols, labels: opts.labels, range: opts.range ?? 'auto' });
        if (opts.caption) el.previewCaption.textContent = opts.caption;
      },
      knn(accuracy: number) {
        s.knn = accuracy;
        panel.draw(true);
      },
      status(text: string) {
        s.status = text;
        el.status.textContent = text;
      },
      get stopped() {
        return panel.stopRequested;
      },
    };
    try {
      this.result = await this.exclusive(() => this.trainer.train(reporter, { steps }));
      s.checkpointReady = !!this.result.checkpoint;
    } catch (e) {
      s.error = (e as Error)?.message ?? String(e);
      el.status.textContent = `training failed: ${s.error}`;
      el.status.className = 'err';
    } finally {
      s.ms = performance.now() - t0;
      s.running = false;
      s.stopped = this.stopRequested;
      s.done = true;
      el.start.disabled = false;
      el.stop.disabled = true;
      el.download.disabled = !s.checkpointReady;
      this.draw(true);
    }
  }

  private draw(force: boolean): void {
    const now = performance.now();
    if (!force && now - this.lastDraw < 100) return; // a step can be faster than a useful redraw
    this.lastDraw = now;
    const s = this.state;
    const el = this.el;
    el.step.textContent = String(s.step);
    el.loss.textContent = s.losses.length ? s.losses[s.losses.length - 1].toPrecision(4) : '–';
    el.rate.textContent = s.samplesPerSec === null ? '–' : s.samplesPerSec >= 100 ? s.samplesPerSec.toFixed(0) : s.samplesPerSec.toPrecision(3);
    el.knn.textContent = s.knn === null ? '–' : `${(100 * s.knn).toFixed(1)}%`;
    drawLossCurve(el.lossCanvas, s.losses, { logY: true, title: 'loss' });
  }

  private async download(): Promise<void> {
    const checkpoint = this.result?.checkpoint;
    if (!checkpoint) return;
    const { bytes, filename } = await this.exclusive(checkpoint); // reads the weights back from the GPU
    const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type: 'application/octet-stream' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
