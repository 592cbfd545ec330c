// The reference BYOL training run (Node): data, augmentations, the BYOL step, progress, metrics, checkpoints
// (atomic, resumable bit-identically), collapse monitoring and the final evaluation of the representation.

import { mkdirSync, writeFileSync, appendFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { getDevice } from '../engine/device.ts';
import { Tensor } from '../engine/tensor.ts';
import { sync } from '../engine/recorder.ts';
import { deriveSeed } from '../engine/random.ts';
import { materialize } from '../nn/module.ts';
import { exportTorchStateDict } from './export.ts';
import { saveSafetensors } from '../nn/safetensors-node.ts';
import { saveCheckpoint, loadLatestCheckpoint, listCheckpoints } from '../nn/checkpoint-node.ts';
import { NonFiniteMonitor } from '../engine/health.ts';
import { loadDataset, channelStats, folderHasTestSplit, DEFAULT_PATHS, type DatasetKind, type ImageDataset } from './data/dataset.ts';
import { GpuDataset } from './data/gpu-dataset.ts';
import { augmentViews } from './augment.ts';
import { byolAugmentConfig } from './augment-params.ts';
import { writeAugmentationPreview } from './preview.ts';
import { Rng } from './rng.ts';
import { BYOL } from './model.ts';
import { ResNet, type ResNetArch, type ResNetStem } from './resnet.ts';
import { lossCurvePng } from './loss-curve.ts';
import { Progress } from './progress.ts';
import { evaluateEncoder } from './evaluate.ts';

export interface TrainOptions {
  data: DatasetKind;
  dataPath?: string;
  arch: ResNetArch;
  width: number;
  stem: ResNetStem;
  /** Channels of the 1x1 head conv after the last stage (the representation's size); 0: none. */
  headChannels: number;
  /** Random-resized-crop area range (the paper's [0.08, 1]). */
  cropScale: [number, number];
  /** Probability of solarizing view 2 (the paper's 0.2). */
  solarize: number;
  /** Passes over the training set; may be fractional (the last one covers the first part of its shuffled order). */
  epochs: number;
  batchSize: number;
  /** Base learning rate, scaled by batchSize / 256; absent: DEFAULT_BASE_LR of the optimizer. */
  baseLr?: number;
  optimizer: 'lars' | 'sgd' | 'adam';
  /** Fraction of the total steps over which the learning rate rises linearly from 0, in [0, 1). */
  warmup: number;
  weightDecay: number;
  tauBase: number;
  projHidden: number;
  projDim: number;
  predHidden: number;
  seed: number;
  out: string;
  resume: boolean;
  /** Read the loss back (and check it is finite) every this many steps. */
  logEvery: number;
  /** Write a checkpoint every this many steps (and at the end). */
  checkpointEvery: number;
  /** Stop after this many steps (for smoke runs); the schedules still span the full run. */
  maxSteps?: number;
  /** Evaluation: 'full' (kNN + linear probe + random-init baseline) or 'none'. */
  evaluate: 'full' | 'none';
  /** Linear probe: 'lbfgs' (converged, L2 chosen on held-out train rows) or 'adam' (probeEpochs of minibatch Adam). */
  probe: 'lbfgs' | 'adam';
  probeEpochs: number;
  /** No progress bar (tests, scripts); messages still go to `log`. */
  quiet?: boolean;
}

/**
 * Base learning rate of each optimizer when none is given (the schedule scales it by batch / 256). Adam's is
 * 3e-3 at batch 64. LARS needs its own: its trust ratio moves a weight tensor by about eta·lr of its norm per
 * step (eta 1e-3), so the paper's 0.2, meant for batch 4096 and ~100k steps, leaves the weights of a
 * thousand-step batch-64 run near their init. bench/results/recipe-ab.md has the screen behind 8.
 */
export const DEFAULT_BASE_LR: Record<TrainOptions['optimizer'], number> = {
  adam: 0.012,
  sgd: 0.012,
  lars: 8,
};

// Sized for the 30-minute CPU budget of the reference run (2 cores, lavapipe): a small ResNet and small heads
// (paper: ResNet-50, 4096/256), Adam (LARS, the paper's, with `--optimizer lars`), tau 0.99
// (the official preset for short runs). The runs behind each choice: bench/results/training-defaults.md.
export const TRAIN_DEFAULTS: TrainOptions = {
  data: 'fashion-mnist',
  arch: 'resnet-small',
  width: 16,
  stem: 'small',
  headChannels: 0,
  cropScale: [0.08, 1], // the paper's views
  solarize: 0.2,
  epochs: 3, // what the 30-minute budget holds with the evaluation (bench/results/training-defaults.md)
  batchSize: 64, // small batches: more steps for the same images
  // no baseLr: DEFAULT_BASE_LR of the optimizer (Adam 3e-3 at batch 64)
  optimizer: 'adam',
  warmup: 0.1,
  weightDecay: 1e-6,
  tauBase: 0.99,
  projHidden: 512,
  projDim: 128,
  predHidden: 512,
  seed: 0,
  out: 'runs/byol',
  resume: false,
  logEvery: 10,
  checkpointEvery: 100,
  evaluate: 'full',
  probe: 'lbfgs',
  probeEpochs: 20,
};

/**
 * Named sets of options over TRAIN_DEFAULTS (`byol train --preset NAME`; flags given beside it still win).
 * 'long': the recipe screened in PyTorch for 0.90 linear (bench/results/long-preset.md): the default with a
 * 512-channel head conv, for 24 epochs. Hours on lavapipe; the default fits the 30-minute budget.
 */
export const TRAIN_PRESETS = {
  default: {},
  long: { headChannels: 512, epochs: 24 },
} satisfies Record<string, Partial<TrainOptions>>;
export type TrainPreset = keyof typeof TRAIN_PRESETS;

/** Options that define the run: a checkpoint may only be resumed with the same values. */
const IDENTITY_KEYS: (keyof TrainOptions)[] = ['data', 'arch', 'width', 'stem', 'headChannels', 'cropScale', 'solarize', 'epochs', 'batchSize', 'baseLr', 'optimizer', 'warmup', 'weightDecay', 'tauBase', 'projHidden', 'projDim', 'predHidden', 'seed'];
/** Keys added to the identity later, with the value every run made before then used. */
const IDENTITY_BEFORE_RECORDED: Partial<Record<keyof TrainOptions, unknown>> = { warmup: 0.1 };

export interface FinalReport {
  [k: string]: unknown;
}

function epochOrder(seed: number, epoch: number, n: number): Int32Array {
  return Int32Array.from(new Rng(deriveSeed(seed, `order/${epoch}`)).permutation(n));
}

export async function train(options: TrainOptions, log: (s: string) => void = (s) => process.stderr.write(s + '\n')): Promise<FinalReport> {
  const opts: TrainOptions = { ...options, baseLr: options.baseLr ?? DEFAULT_BASE_LR[options.optimizer] };
  if (!(opts.baseLr! >= 0)) throw new Error(`train: baseLr must be a number >= 0, got ${opts.baseLr}`);
  if (!(opts.warmup >= 0 && opts.warmup < 1)) throw new Error(`train: warmup must be a fraction of the steps in [0, 1), got ${opts.warmup}`);
  if (!(opts.epochs > 0) || !Number.isFinite(opts.epochs)) throw new Error(`train: epochs must be a number > 0, got ${opts.epochs}`);
  // every check of the data comes before anything is written: a failed one leaves no --out folder behind
  const trainSet: ImageDataset = loadDataset({ kind: opts.data, path: opts.dataPath, split: 'train' });
  const B = opts.batchSize;
  if (trainSet.n < B) throw new Error(`train: the data set has ${trainSet.n} images, fewer than one batch of ${B} (pass a smaller --batch)`);
  const evaluate = opts.evaluate === 'full' && !!trainSet.labels;
  if (opts.evaluate === 'full' && !trainSet.labels) log(`byol: ${trainSet.name} has no labels (no class subfolders), so there is nothing to evaluate against: training only`);
  if (evaluate && opts.data === 'folder' && !folderHasTestSplit(opts.dataPath!)) {
    throw new Error(`train: ${opts.dataPath} has no test/ subfolder, so the representation cannot be evaluated: pass --no-eval to train ` +
      'without evaluation, or split the images into train/ and test/ subfolders (each with one subfolder per class)');
  }
  const testSet: ImageDataset | null = evaluate ? loadDataset({ kind: opts.data, path: opts.dataPath, split: 'test' }) : null;
  const stats = channelStats(trainSet);

  const ctx = await getDevice();
  mkdirSync(opts.out, { recursive: true });
  const ckptDir = join(opts.out, 'checkpoints');
  const identity = Object.fromEntries(IDENTITY_KEYS.map((k) => [k, opts[k]]));
  const stepsPerEpoch = Math.floor(trainSet.n / B);
  // a fractional last epoch takes the first part of its shuffled order
  const totalSteps = Math.max(1, Math.round(stepsPerEpoch * opts.epochs));
  // at 0.1 this rounds as round(totalSteps / 10), what every run before the flag used
  const warmupSteps = Math.min(totalSteps - 1, Math.round(totalSteps * opts.warmup));
  const lastStep = Math.min(totalSteps, opts.maxSteps ?? totalSteps);
  log(`byol: ${trainSet.name} ${trainSet.n} images ${trainSet.height}x${trainSet.width}x${trainSet.channels}; ${opts.arch} width ${opts.width}; ` +
    `${opts.epochs} epochs x ${stepsPerEpoch} steps of ${B} (${totalSteps} steps); device: ${ctx.info.description || ctx.info.vendor}`);

  const augOpts = { imageSize: trainSet.height, cropScale: opts.cropScale, solarizeProb: opts.solarize };
  const augCfg = byolAugmentConfig({ ...augOpts, normalize: stats });
  const model = new BYOL({
    encoder: { arch: opts.arch, width: opts.width, stem: opts.stem, headChannels: opts.headChannels, inChannels: trainSet.channels },
    projHidden: opts.projHidden,
    projDim: opts.projDim,
    predHidden: opts.predHidden,
    optimizer: opts.optimizer,
    baseLr: opts.baseLr,
    warmupSteps,
    weightDecay: opts.weightDecay,
    batchSize: B,
    totalSteps,
    tauBase: opts.tauBase,
    seed: opts.seed,
  });
  const data = new GpuDataset(trainSet);
  const pending: { step: number; loss: Tensor; projStd: Tensor | null; lr: number; tau: number }[] = [];
  let health: NonFiniteMonitor | null = null;
  try {
    const metricsPath = join(opts.out, 'metrics.jsonl');
    const curve: { step: number; loss: number }[] = [];

    if (opts.resume) {
      if (!existsSync(ckptDir) || (await listCheckpoints(ckptDir)).length === 0) throw new Error(`train --resume: no checkpoint in ${ckptDir}`);
      const ck = await loadLatestCheckpoint(ckptDir, { onWarning: (w) => log(`byol: warning: ${w}`) });
      const saved = { ...IDENTITY_BEFORE_RECORDED, ...(ck.meta?.identity ?? {}) } as Record<string, unknown>;
      const unrecorded = IDENTITY_KEYS.filter((k) => !(k in saved));
      if (unrecorded.length) throw new Error(`train --resume: ${ck.path} does not record ${unrecorded.join(', ')}, so it cannot be shown to match this run; start a new run`);
      const diff = IDENTITY_KEYS.filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(opts[k]));
      if (diff.length) throw new Error(`train --resume: ${ck.path} was made with different ${diff.map((k) => `${k} (${JSON.stringify(saved[k])} vs ${JSON.stringify(opts[k])})`).join(', ')}`);
      model.loadStateDict(ck.tensors);
      // keep the metrics of the steps the checkpoint covers; later lines are redone
      if (existsSync(metricsPath)) {
        const kept = readFileSync(metricsPath, 'utf8').split('\n').filter((l) => l && JSON.parse(l).step < model.step);
        writeFileSync(metricsPath, kept.map((l) => l + '\n').join(''));
        for (const l of kept) curve.push(JSON.parse(l));
      }
      log(`byol: resumed from ${ck.path} at step ${model.step}`);
    } else {
      rmSync(metricsPath, { force: true });
      writeFileSync(join(opts.out, 'config.json'), JSON.stringify({ ...opts, totalSteps, stepsPerEpoch, warmupSteps }, null, 2) + '\n');
      const first = data.gather(epochOrder(opts.seed, 0, trainSet.n).subarray(0, 16));
      await writeAugmentationPreview(join(opts.out, 'augmentations.png'), first, new Rng(deriveSeed(opts.seed, 'preview')), byolAugmentConfig(augOpts));
      first.dispose();
    }

    const checkpoint = async () => {
      await saveCheckpoint(ckptDir, model.step, { tensors: await model.stateDict(), meta: { identity } }, { keep: 3 });
    };

    const progress = new Progress(lastStep, model.step, B, !opts.quiet);
    let order = epochOrder(opts.seed, Math.floor(model.step / stepsPerEpoch), trainSet.n);
    const monitorEvery = opts.logEvery * 5;
    // NaN/Inf in the loss is flagged on the GPU each step and read only with the logged losses
    health = new NonFiniteMonitor({ step: model.step });
    let lastStd = NaN;
    const t0 = Date.now();
    const startStep = model.step;
    let lastLoss = NaN;
    while (model.step < lastStep) {
      const k = model.step;
      const epoch = Math.floor(k / stepsPerEpoch);
      if (k % stepsPerEpoch === 0) order = epochOrder(opts.seed, epoch, trainSet.n);
      const i0 = (k % stepsPerEpoch) * B;
      const x = data.gather(order.subarray(i0, i0 + B));
      const [v1, v2] = augmentViews(x, new Rng(deriveSeed(opts.seed, `augment/${k}`)), augCfg);
      const r = model.trainStep(v1, v2, { monitor: (k + 1) % monitorEvery === 0 || k + 1 === lastStep });
      x.dispose();
      v1.dispose();
      v2.dispose();
      health!.check(r.loss, 'loss');
      // the weights after the update too: a checkpoint must never hold what the next loss would reveal as broken
      health!.check(model.online.arena!.data.flat, 'weights');
      health!.nextStep();
      pending.push({ step: k, ...r });
      const done = model.step;
      const saveNow = done % opts.checkpointEvery === 0 || done === lastStep;
      // a checkpoint is written only after the losses it covers were checked
      if (done % opts.logEvery === 0 || saveNow) {
        const h = await health!.poll();
        if (!h.ok) {
          const lr = pending.find((p) => p.step === h.step)?.lr ?? NaN;
          throw new Error(`train: the ${h.what} became ${h.kinds?.join('/')} at step ${h.step} (lr ${lr.toExponential(3)}); stopped without saving. ` +
            `The last good checkpoint is in ${ckptDir}; resume with --resume and a lower --lr.`);
        }
        for (const p of pending.splice(0)) {
          const loss = await readAndDispose(p.loss);
          lastLoss = loss;
          const line: Record<string, unknown> = { step: p.step, epoch: p.step / stepsPerEpoch, loss, lr: p.lr, tau: p.tau, time_s: (Date.now() - t0) / 1000 };
          if (p.projStd) lastStd = line.proj_std = await readAndDispose(p.projStd);
          appendFileSync(metricsPath, JSON.stringify(line) + '\n');
          curve.push({ step: p.step, loss });
        }
        progress.update(done, lastLoss);
      } else progress.update(done);
      if (saveNow) await checkpoint();
    }
    await sync();
    progress.finish();
    const trainSeconds = (Date.now() - t0) / 1000;
    const imagesPerSecond = ((model.step - startStep) * B) / Math.max(1e-9, trainSeconds);
    writeFileSync(join(opts.out, 'loss-curve.png'), lossCurvePng(curve));
    await saveSafetensors(join(opts.out, 'encoder.safetensors'), await exportTorchStateDict(model.encoder), { format: 'pt', arch: opts.arch });

    const report: FinalReport = {
      data: trainSet.name,
      data_kind: opts.data,
      data_path: resolve(opts.dataPath ?? (opts.data === 'folder' ? '' : DEFAULT_PATHS[opts.data])),
      arch: opts.arch,
      width: opts.width,
      head_channels: opts.headChannels,
      crop_scale: opts.cropScale,
      solarize: opts.solarize,
      feature_dim: model.encoder.featureDim,
      epochs: opts.epochs,
      steps: model.step,
      total_steps: totalSteps,
      batch_size: B,
      optimizer: opts.optimizer,
      base_lr: opts.baseLr,
      warmup: opts.warmup,
      final_loss: lastLoss,
      train_seconds: trainSeconds,
      images_per_second: imagesPerSecond,
      device: ctx.info.description || ctx.info.vendor,
    };
    const projStd = lastStd;
    report.proj_std = projStd;
    report.proj_std_healthy = 1 / Math.sqrt(opts.projDim);
    report.collapsed = projStd < 0.2 / Math.sqrt(opts.projDim);
    if (report.collapsed) log(`byol: WARNING: representation collapse: std of normalized projections ${projStd.toFixed(4)} vs ${(1 / Math.sqrt(opts.projDim)).toFixed(4)} when healthy`);

    if (opts.evaluate === 'full' && testSet) {
      const testData = new GpuDataset(testSet);
      const evalOpts = { normalize: stats, probe: opts.probe, probeEpochs: opts.probeEpochs, seed: opts.seed, log };
      log('byol: evaluating the learned encoder (kNN and linear probe)');
      const learned = await evaluateEncoder(model.encoder, data, testData, { ...evalOpts, knn: true });
      log('byol: evaluating a random-init encoder of the same architecture (baseline)');
      const random = materialize(new ResNet(model.encoder.config), { seed: deriveSeed(opts.seed, 'random-baseline') });
      const baseline = await evaluateEncoder(random, data, testData, { ...evalOpts, knn: false });
      random.dispose();
      testData.dispose();
      Object.assign(report, {
        knn_top1: learned.knnTop1,
        knn_protocol: 'cosine, k=200, T=0.1, weighted vote, train set as memory bank',
        linear_top1: learned.linearTop1,
        linear_train_top1: learned.linearTrainTop1,
        random_linear_top1: baseline.linearTop1,
        linear_gain_over_random: learned.linearTop1 - baseline.linearTop1,
        linear_protocol: opts.probe === 'lbfgs'
          ? 'standardized features; multinomial logistic regression by L-BFGS to max |grad| <= gtol; L2 chosen on held-out train rows, refit on all'
          : `standardized features; Linear layer, ${opts.probeEpochs} epochs of Adam (lr 1e-2, cosine), batch 256, no L2`,
        ...(learned.probe && { probe: learned.probe, random_probe: baseline.probe }),
        eval_seconds: learned.seconds + baseline.seconds,
        eval_feature_seconds: learned.featureSeconds + baseline.featureSeconds,
      });
    }
    writeFileSync(join(opts.out, 'final.json'), JSON.stringify(report, null, 2) + '\n');
    return report;
  } finally {
    // also on errors (a diverged loss, a bad checkpoint): a failed run must not leave GPU memory behind
    for (const p of pending.splice(0)) {
      p.loss.dispose();
      p.projStd?.dispose();
    }
    health?.dispose();
    data.dispose();
    model.dispose();
  }
}

async function readAndDispose(t: Tensor): Promise<number> {
  try {
    return (await t.toArray())[0];
  } finally {
    t.dispose();
  }
}
