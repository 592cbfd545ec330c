// Linear evaluation of frozen features: standardize with the train set's per-feature mean and std, train one
// Linear(D, numClasses) layer with softmax cross-entropy on shuffled minibatches (gathered on the GPU from a
// permutation uploaded once per epoch), cosine-decayed learning rate, then top-1 accuracy by argmax on the GPU.
// A seed fixes the initialization and the shuffles, and every kernel involved is deterministic, so a seed
// gives the same result every run on a given device.

import { Tensor, tensor, tidy, keep, fmtShape } from '../../engine/tensor.ts';
import { noGrad, backward } from '../../engine/tape.ts';
import { flush, sync } from '../../engine/recorder.ts';
import { Linear, materialize } from '../../nn/module.ts';
import { Adam, SGD, type Optimizer } from '../../nn/optim.ts';
import { Rng, deriveSeed } from '../../engine/random.ts';
import { checkFeatures, checkFeaturePair, labelArray, assertFinite, top1, type Labels } from './check.ts';
import { ew } from '../../kernels/elementwise.ts';
import { mean } from '../../kernels/reduce.ts';
import { softmaxCrossEntropy, argmax } from '../../kernels/softmax.ts';
import { gatherRows } from '../../kernels/gather.ts';

export interface LinearProbeOptions {
  numClasses: number;
  /** Passes over the train set (default 10: within ~0.2 points of the plateau on 60000 x 64 features). */
  epochs?: number;
  /** Default 256; the last batch of an epoch may be smaller. */
  batchSize?: number;
  /** Peak learning rate, decayed to 0 on a cosine over all steps (default 1e-2 for Adam, 0.1 for SGD). */
  lr?: number;
  /** L2 penalty added to the gradient (default 0, as BYOL's linear evaluation). */
  weightDecay?: number;
  /** 'adam' (default) or 'sgd' (heavy-ball momentum 0.9, as PyTorch's SGD; no Nesterov variant in the engine). */
  optimizer?: 'adam' | 'sgd';
  /** Seeds the initialization and the shuffles (default 0). */
  seed?: number;
  /** Called after each epoch has finished on the GPU. */
  onProgress?: (epoch: number, epochs: number) => void;
}

export interface LinearProbeResult {
  /** Test accuracy. */
  top1: number;
  /** Accuracy on the train features (a gap to top1 shows overfitting; both low, an underfit probe). */
  trainTop1: number;
}

function positiveInt(what: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${what}: ${name} must be a positive integer, got ${v}`);
}

/** (x - mean) / std per feature with the train set's statistics; a constant feature becomes 0. */
function standardizer(train: Tensor): { mu: Tensor; std: Tensor } {
  return noGrad(() => tidy(() => {
    const mu = mean(train, 0, true);
    const variance = mean(ew('linearProbe.sqdev', '(a - b) * (a - b)', [train, mu], train.shape), 0, true);
    return { mu, std: ew('linearProbe.std', 'max(sqrt(a), 1e-6)', [variance], variance.shape) };
  }));
}

function standardize(x: Tensor, s: { mu: Tensor; std: Tensor }): Tensor {
  return noGrad(() => ew('linearProbe.standardize', '(a - b) / c', [x, s.mu, s.std], x.shape));
}

async function accuracy(model: Linear, x: Tensor, labels: Int32Array): Promise<number> {
  const pred = noGrad(() => tidy(() => argmax(model.forward(x))));
  try {
    return top1((await pred.toArray()) as Int32Array, labels);
  } finally {
    pred.dispose();
  }
}

/** Trains a linear classifier on frozen train features and reports its top-1 accuracy on the test features. */
export async function linearProbe(
  trainFeats: Tensor, trainLabels: Labels, testFeats: Tensor, testLabels: Labels, opts: LinearProbeOptions,
): Promise<LinearProbeResult> {
  const what = 'linearProbe';
  const [N, D, M] = checkFeaturePair(what, trainFeats, testFeats);
  const C = opts.numClasses;
  positiveInt(what, 'numClasses', C);
  const epochs = opts.epochs ?? 10;
  const batchSize = opts.batchSize ?? 256;
  positiveInt(what, 'epochs', epochs);
  positiveInt(what, 'batchSize', batchSize);
  const kind = opts.optimizer ?? 'adam';
  if (kind !== 'adam' && kind !== 'sgd') throw new Error(`${what}: optimizer must be 'adam' or 'sgd', got '${kind}'`);
  const lr = opts.lr ?? (kind === 'adam' ? 1e-2 : 0.1);
  const weightDecay = opts.weightDecay ?? 0;
  if (!(lr > 0) || !Number.isFinite(lr)) throw new Error(`${what}: lr must be a positive number, got ${lr}`);
  if (!(weightDecay >= 0) || !Number.isFinite(weightDecay)) throw new Error(`${what}: weightDecay must be a number >= 0, got ${weightDecay}`);
  const seed = opts.seed ?? 0;
  const trainY = await labelArray(`${what}: train labels`, trainLabels, N, C);
  const testY = await labelArray(`${what}: test labels`, testLabels, M, C);
  await assertFinite(`${what}: train features`, trainFeats);
  await assertFinite(`${what}: test features`, testFeats);

  const owned: Tensor[] = [];
  const own = (t: Tensor) => (owned.push(keep(t)), t);
  let model: Linear | null = null;
  let optim: Optimizer | null = null;
  try {
    const stats = standardizer(trainFeats);
    own(stats.mu);
    own(stats.std);
    const xTrain = own(standardize(trainFeats, stats));
    const xTest = own(standardize(testFeats, stats));
    const yTrain = own(tensor(trainY, [N], { dtype: 'i32' }));
    model = materialize(new Linear(D, C), { seed, label: what });
    optim = kind === 'adam' ? new Adam(model, { lr, weightDecay }) : new SGD(model, { lr, momentum: 0.9, weightDecay });
    const rng = new Rng(deriveSeed(seed, 'linearProbe.shuffle'));
    const perm = new Int32Array(N);
    const stepsPerEpoch = Math.ceil(N / batchSize);
    const totalSteps = epochs * stepsPerEpoch;
    let step = 0;
    for (let epoch = 0; epoch < epochs; epoch++) {
      for (let i = 0; i < N; i++) perm[i] = i;
      for (let i = N - 1; i > 0; i--) {
        const j = Math.floor(rng.next() * (i + 1));
        const t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
      }
      const permT = tensor(perm, [N], { dtype: 'i32' });
      for (let start = 0; start < N; start += batchSize, step++) {
        const count = Math.min(batchSize, N - start);
        const m = model;
        const o = optim;
        tidy(() => {
          const xb = gatherRows(xTrain, permT, start, count);
          const yb = gatherRows(yTrain, permT, start, count);
          backward(softmaxCrossEntropy(m.forward(xb), yb));
          o.step(lr * 0.5 * (1 + Math.cos((Math.PI * step) / totalSteps)));
        });
        flush();
      }
      permT.dispose();
      await sync();
      opts.onProgress?.(epoch + 1, epochs);
    }
    return { top1: await accuracy(model, xTest, testY), trainTop1: await accuracy(model, xTrain, trainY) };
  } finally {
    optim?.dispose();
    model?.dispose();
    for (const t of owned) t.dispose();
  }
}
