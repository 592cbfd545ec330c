// The BYOL model: an online network (encoder -> projector -> predictor) trained to predict the target network's
// projection of the other view; the target (encoder -> projector) is an exponential moving average of the online
// weights. Both live in parameter arenas with the same leading layout (the predictor is declared last), so the
// EMA is one dispatch over the target arena and the optimizer a few over the online arena.

import { Module, materialize, Sequential } from '../nn/module.ts';
import { LARS, SGD, Adam, type Optimizer } from '../nn/optim.ts';
import { emaUpdate } from '../nn/ema.ts';
import { warmupCosine, emaTau } from '../nn/schedule.ts';
import { Tensor, tidy, fmtShape } from '../engine/tensor.ts';
import { backward, noGrad } from '../engine/tape.ts';
import { flush } from '../engine/recorder.ts';
import { mul } from '../kernels/elementwise.ts';
import { concatRows, sliceRows, swapHalves } from '../kernels/rows.ts';
import { withBatchNormGroups } from '../nn/layers.ts';
import { cosineLoss, normalizedStd } from '../kernels/cosine.ts';
import { ResNet, type ResNetConfig } from './resnet.ts';
import { mlpHead } from './heads.ts';
import type { TensorEntry } from '../engine/safetensors.ts';

export interface BYOLConfig {
  encoder: ResNetConfig;
  projHidden?: number; // 4096 in the paper
  projDim?: number; // 256
  predHidden?: number; // 4096
  optimizer?: 'lars' | 'sgd' | 'adam';
  /** Base learning rate; the schedule scales it by batchSize / 256. */
  baseLr?: number;
  weightDecay?: number;
  batchSize: number;
  totalSteps: number;
  warmupSteps?: number;
  /** EMA decay at step 0; it rises to 1 along a cosine (BYOL §3.3). */
  tauBase?: number;
  seed?: number;
}

export const BYOL_DEFAULTS = {
  projHidden: 4096,
  projDim: 256,
  predHidden: 4096,
  optimizer: 'lars' as const,
  baseLr: 0.2,
  weightDecay: 1.5e-6,
  tauBase: 0.996,
  seed: 0,
};

class TargetNetwork extends Module {
  readonly encoder: ResNet;
  readonly projector: Sequential;
  constructor(cfg: Required<BYOLConfig>) {
    super();
    this.encoder = this.child('encoder', new ResNet(cfg.encoder));
    this.projector = this.child('projector', mlpHead(this.encoder.featureDim, cfg.projHidden, cfg.projDim));
  }
  forward(x: Tensor): Tensor {
    return this.projector.forward(this.encoder.forward(x));
  }
}

class OnlineNetwork extends TargetNetwork {
  readonly predictor: Sequential;
  constructor(cfg: Required<BYOLConfig>) {
    super(cfg);
    this.predictor = this.child('predictor', mlpHead(cfg.projDim, cfg.predHidden, cfg.projDim));
  }
  override forward(x: Tensor): Tensor {
    return this.predictor.forward(super.forward(x));
  }
}

export interface StepResult {
  /** The symmetric loss (a scalar on the GPU; read it with item() only when needed). */
  loss: Tensor;
  /** With { monitor: true }: std of the normalized online projections of view 1 (collapse monitor). */
  projStd: Tensor | null;
  lr: number;
  tau: number;
}

export class BYOL {
  readonly config: Required<BYOLConfig>;
  readonly online: OnlineNetwork;
  readonly target: TargetNetwork;
  readonly optimizer: Optimizer;
  /** Optimizer steps taken so far (the schedules' k). */
  step = 0;

  constructor(config: BYOLConfig) {
    const cfg = { ...BYOL_DEFAULTS, warmupSteps: Math.round(config.totalSteps / 10), ...config } as Required<BYOLConfig>;
    if (!(cfg.totalSteps > 0)) throw new Error(`BYOL: totalSteps must be > 0, got ${cfg.totalSteps}`);
    if (!(cfg.batchSize >= 2)) throw new Error(`BYOL: batchSize must be >= 2 (batch statistics), got ${cfg.batchSize}`);
    this.config = cfg;
    // independent initializations, as the official code (rng_online, rng_target = split(rng))
    this.online = materialize(new OnlineNetwork(cfg), { seed: cfg.seed * 2 + 1, label: 'online' });
    this.target = materialize(new TargetNetwork(cfg), { seed: cfg.seed * 2 + 2, label: 'target' });
    const wd = cfg.weightDecay;
    this.optimizer =
      cfg.optimizer === 'lars' ? new LARS(this.online, { lr: 0, weightDecay: wd, momentum: 0.9, eta: 1e-3 })
      : cfg.optimizer === 'sgd' ? new SGD(this.online, { lr: 0, momentum: 0.9, weightDecay: wd, excludeBiasAndNorm: true })
      : new Adam(this.online, { lr: 0, weightDecay: wd, excludeBiasAndNorm: true });
  }

  /** The online encoder: the representation that is evaluated and exported. */
  get encoder(): ResNet {
    return this.online.encoder;
  }

  lrAt(k: number): number {
    const c = this.config;
    return warmupCosine(k, { baseLr: c.baseLr, batchSize: c.batchSize, warmupSteps: c.warmupSteps, totalSteps: c.totalSteps });
  }

  tauAt(k: number): number {
    return emaTau(k, this.config.totalSteps, this.config.tauBase);
  }

  /**
   * One training step on two augmented views of the same images ([B, H, W, C] each): the online and the target
   * network each run once over both views as one batch of 2B, with BN statistics per view (the math of four
   * separate passes, with half the dispatches, and each conv's weight gradient summed over both views in its
   * kernel); the symmetric loss, backward into the online network only, the optimizer step, then the EMA of the
   * target toward the updated online weights. Records everything into one submit; nothing is read back.
   */
  trainStep(view1: Tensor, view2: Tensor, opts: { monitor?: boolean } = {}): StepResult {
    if (view1.rank !== 4 || view1.shape.some((d, i) => d !== view2.shape[i])) {
      throw new Error(`BYOL.trainStep: views must be NHWC tensors of one shape, got ${fmtShape(view1.shape)} and ${fmtShape(view2.shape)}`);
    }
    const k = this.step;
    const lr = this.lrAt(k);
    const tau = this.tauAt(k);
    this.online.train();
    this.target.train(); // BYOL normalizes the target with batch statistics too
    const B = view1.shape[0];
    const { loss, projStd } = tidy(() => {
      const views = concatRows([view1, view2]);
      // each view's prediction regresses the other view's target: the target rows in swapped order
      const swapped = withBatchNormGroups(this.target, 2, () => noGrad(() => {
        const t = this.target.forward(views);
        return swapHalves(t);
      }));
      return withBatchNormGroups(this.online, 2, () => {
        const z = this.online.projector.forward(this.online.encoder.forward(views));
        const p = this.online.predictor.forward(z);
        const std = opts.monitor ? noGrad(() => normalizedStd(sliceRows(z, 0, B))) : null;
        // the mean over 2B rows is half of the per-view sum loss(p1, t2) + loss(p2, t1)
        const l = mul(cosineLoss(p, swapped), 2);
        backward(l);
        return { loss: l, projStd: std };
      });
    });
    this.optimizer.step(lr);
    emaUpdate(this.target.arena!, this.online.arena!, tau);
    this.step++;
    flush();
    return { loss, projStd, lr, tau };
  }

  /** Everything needed to resume bit-identically: both networks (with BN statistics), optimizer state, step. */
  async stateDict(): Promise<Map<string, TensorEntry>> {
    const out = new Map<string, TensorEntry>();
    for (const [n, e] of await this.online.stateDict()) out.set(`online.${n}`, e);
    for (const [n, e] of await this.target.stateDict()) out.set(`target.${n}`, e);
    for (const [n, e] of await this.optimizer.stateDict()) out.set(`optimizer.${n}`, e);
    out.set('byol.step', { shape: [1], data: Float32Array.of(this.step) });
    return out;
  }

  loadStateDict(map: Map<string, TensorEntry>): void {
    const part = (prefix: string) => new Map([...map].filter(([n]) => n.startsWith(prefix)).map(([n, e]) => [n.slice(prefix.length), e]));
    const step = map.get('byol.step');
    if (!step) throw new Error('BYOL.loadStateDict: checkpoint has no byol.step entry (not a BYOL training checkpoint?)');
    this.online.loadStateDict(part('online.'));
    this.target.loadStateDict(part('target.'));
    this.optimizer.loadStateDict(part('optimizer.'));
    this.step = step.data[0];
  }

  dispose(): void {
    this.optimizer.dispose();
    this.online.dispose();
    this.target.dispose();
  }
}


