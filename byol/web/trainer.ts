// The contract between the page's "Train" panel and whatever it trains. A Trainer owns its model and loop and
// reports through a TrainReporter; the panel (byol/web/train-panel.ts) draws the loss curve, throughput,
// preview images and kNN accuracy, offers the checkpoint download, and mirrors everything on
// window.__byol.training for the browser test. BYOL (byol-trainer.ts) implements it; another model would too.

import type { ImageBatch } from './plot.ts';

export interface TrainReporter {
  /** After each optimizer step: the step's loss and how many images (samples) it consumed, for images/s. */
  step(loss: number, images: number): void;
  /** Images for the preview canvas (BYOL: the two augmented views of a few images), NHWC. */
  preview(batch: ImageBatch, opts?: { labels?: string[]; cols?: number; range?: [number, number] | 'auto'; caption?: string }): void;
  /** kNN top-1 accuracy in [0, 1] of the current encoder, whenever the trainer evaluates it. */
  knn(accuracy: number): void;
  /** One line of status text (epoch, learning rate, what is happening). */
  status(text: string): void;
  /** True once the user pressed Stop: the trainer should return after the current step. */
  readonly stopped: boolean;
}

export interface TrainOptions {
  steps: number;
}

export interface TrainResult {
  /** Bytes and a file name for the download button (BYOL: the online encoder as safetensors). */
  checkpoint?: () => Promise<{ bytes: Uint8Array; filename: string }>;
  /** Frees the model's tensors; called before the next run. */
  dispose(): void;
}

export interface Trainer {
  /** shown as the panel's subtitle */
  name: string;
  /** one or two sentences under the subtitle */
  description: string;
  /** what a "sample" is, for the throughput figure: 'images' for BYOL */
  unit: string;
  defaultSteps: number;
  /** Runs training to `steps` or until reporter.stopped. Must not leave tensors behind except those in the result. */
  train(reporter: TrainReporter, opts: TrainOptions): Promise<TrainResult>;
}
