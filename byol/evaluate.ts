// Evaluation of a frozen encoder: features of the train and test sets (eval-mode BN folded into the convs, no
// augmentation), a kNN monitor and a linear probe, all computed with the engine on the GPU.

import { Module } from '../nn/module.ts';
import { foldBatchNorm } from '../nn/fold.ts';
import { tidy, tensor, type Tensor } from '../engine/tensor.ts';
import { noGrad } from '../engine/tape.ts';
import { ew } from '../kernels/elementwise.ts';
import { GpuDataset } from './data/gpu-dataset.ts';
import { extractFeatures, knnAccuracy, linearProbe, convergedLinearProbe, type ConvergedProbeResult } from './eval/index.ts';

export interface EncoderEval {
  knnTop1: number | null;
  linearTop1: number;
  linearTrainTop1: number;
  /** The converged probe's protocol and outcome (null for the Adam probe). */
  probe: ConvergedProbeResult['probe'] | null;
  /** Of `seconds`: feature extraction of both splits. */
  featureSeconds: number;
  seconds: number;
}

export interface EvaluateOptions {
  normalize: { mean: number[]; std: number[] };
  /** 'lbfgs': the converged probe with L2 selection (default); 'adam': probeEpochs of minibatch Adam. */
  probe?: 'lbfgs' | 'adam';
  probeEpochs: number;
  seed: number;
  knn: boolean;
  /** Images per encoder call (default 256). */
  batchSize?: number;
  log: (s: string) => void;
}

export async function evaluateEncoder(encoder: Module, train: GpuDataset, test: GpuDataset, opts: EvaluateOptions): Promise<EncoderEval> {
  const t0 = Date.now();
  const wasTraining = encoder.training;
  encoder.eval();
  let trainFeats: Tensor | null = null;
  let testFeats: Tensor | null = null;
  let net: Awaited<ReturnType<typeof foldBatchNorm>> | null = null;
  try {
    // BN folded into the convs, checked against the eval-mode forward on a few train images
    const sample = noGrad(() => tidy(() => {
      const x = train.gather(Int32Array.from({ length: Math.min(8, train.n) }, (_, i) => i));
      const c = train.channels;
      return ew('evaluate.normalize', '(a - b) / c', [x, tensor(opts.normalize.mean, [c]), tensor(opts.normalize.std, [c])], x.shape);
    }));
    try {
      net = await foldBatchNorm(encoder, sample);
    } finally {
      sample.dispose();
    }
    const run = net.forward;
    const extract = { normalize: opts.normalize, batchSize: opts.batchSize ?? 256 };
    trainFeats = await extractFeatures(run, train, extract);
    testFeats = await extractFeatures(run, test, extract);
    const featureSeconds = (Date.now() - t0) / 1000;
    const numClasses = train.classes.length;
    const knnTop1 = opts.knn ? (await knnAccuracy(trainFeats, train.labels!, testFeats, test.labels!, { numClasses })).top1 : null;
    const knnSeconds = (Date.now() - t0) / 1000 - featureSeconds;
    let linearTop1: number;
    let linearTrainTop1: number;
    let probe: ConvergedProbeResult['probe'] | null = null;
    if ((opts.probe ?? 'lbfgs') === 'lbfgs') {
      const r = await convergedLinearProbe(trainFeats, train.labels!, testFeats, test.labels!, { numClasses, seed: opts.seed, log: (l) => opts.log(`byol:   ${l}`) });
      (linearTop1 = r.top1), (linearTrainTop1 = r.trainTop1), (probe = r.probe);
    } else {
      const r = await linearProbe(trainFeats, train.labels!, testFeats, test.labels!, { numClasses, epochs: opts.probeEpochs, seed: opts.seed });
      (linearTop1 = r.top1), (linearTrainTop1 = r.trainTop1);
    }
    const how = probe ? `L-BFGS, l2 ${probe.chosen_l2}${probe.converged ? '' : ', NOT converged'}` : `Adam, ${opts.probeEpochs} epochs`;
    opts.log(`byol:   ${knnTop1 !== null ? `kNN top-1 ${knnTop1.toFixed(4)}, ` : ''}linear probe top-1 ${linearTop1.toFixed(4)} (train ${linearTrainTop1.toFixed(4)}; ${how}); ` +
      `features ${featureSeconds.toFixed(0)} s, kNN ${knnSeconds.toFixed(0)} s, total ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    return { knnTop1, linearTop1, linearTrainTop1, probe, featureSeconds, seconds: (Date.now() - t0) / 1000 };
  } finally {
    net?.dispose();
    trainFeats?.dispose();
    testFeats?.dispose();
    if (wasTraining) encoder.train();
  }
}
