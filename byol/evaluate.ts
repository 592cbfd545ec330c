// Evaluation of a frozen encoder: features of the train and test sets (eval-mode BN, no augmentation), a kNN
// monitor and a linear probe, all computed with the engine on the GPU.

import { Module } from '../nn/module.ts';
import type { Tensor } from '../engine/tensor.ts';
import { GpuDataset } from './data/gpu-dataset.ts';
import { extractFeatures, knnAccuracy, linearProbe } from './eval/index.ts';

export interface EncoderEval {
  knnTop1: number | null;
  linearTop1: number;
  linearTrainTop1: number;
  seconds: number;
}

export async function evaluateEncoder(
  encoder: Module,
  train: GpuDataset,
  test: GpuDataset,
  opts: { normalize: { mean: number[]; std: number[] }; probeEpochs: number; seed: number; knn: boolean; log: (s: string) => void },
): Promise<EncoderEval> {
  const t0 = Date.now();
  const wasTraining = encoder.training;
  encoder.eval();
  const run = (x: Parameters<Module['forward']>[0]) => encoder.forward(x);
  let trainFeats: Tensor | null = null;
  let testFeats: Tensor | null = null;
  try {
    trainFeats = await extractFeatures(run, train, { normalize: opts.normalize });
    testFeats = await extractFeatures(run, test, { normalize: opts.normalize });
    const numClasses = train.classes.length;
    const knnTop1 = opts.knn ? (await knnAccuracy(trainFeats, train.labels!, testFeats, test.labels!, { numClasses })).top1 : null;
    const probe = await linearProbe(trainFeats, train.labels!, testFeats, test.labels!, { numClasses, epochs: opts.probeEpochs, seed: opts.seed });
    opts.log(`byol:   ${knnTop1 !== null ? `kNN top-1 ${knnTop1.toFixed(4)}, ` : ''}linear probe top-1 ${probe.top1.toFixed(4)} (train ${probe.trainTop1.toFixed(4)})`);
    return { knnTop1, linearTop1: probe.top1, linearTrainTop1: probe.trainTop1, seconds: (Date.now() - t0) / 1000 };
  } finally {
    trainFeats?.dispose();
    testFeats?.dispose();
    if (wasTraining) encoder.train();
  }
}
