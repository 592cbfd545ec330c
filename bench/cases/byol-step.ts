// One BYOL training step without the augmentations: two fixed views, four forward passes (online and target on
// each view, BN statistics per view), the symmetric loss, backward, Adam and the EMA. Reported in images/s (one
// image = one pair of views). Two rows: the training default shape of issue 13 (resnet-small width 16, batch 64,
// heads 512/128, byol/train.ts TRAIN_DEFAULTS at the time), kept fixed so the figure stays comparable whatever
// the defaults become, and the older default (width 8, batch 256). Peers: the same network and step from tfjs ops
// (bench/peer-byol.ts) and in PyTorch on the CPU (bench/peer-torch.py).

import { tensor, type Tensor } from '../../nn/index.ts';
import { BYOL } from '../../byol/model.ts';
import { Conv2d } from '../../nn/layers.ts';
import type { ResNetStem } from '../../byol/resnet.ts';
import type { BenchCase, SideOps } from '../case.ts';
import { randomData } from '../case.ts';
import type { Tf } from '../peer.ts';
import { tfjsByolStep } from '../peer-byol.ts';

export interface ByolStepShape {
  batch: number;
  size: number;
  channels: number;
  width: number;
  projHidden: number;
  projDim: number;
  predHidden: number;
  /** The encoder's stem (ResNet's; 'small' when absent, the training default). */
  stem?: ResNetStem;
}

/** The training default shape (issue 13): resnet-small w16, batch 64, heads 512/128, Adam, 28x28x1. */
export const TRAIN_STEP_SHAPE: ByolStepShape = { batch: 64, size: 28, channels: 1, width: 16, projHidden: 512, projDim: 128, predHidden: 512 };
/** The older default, width 8 at batch 256. */
export const OLD_STEP_SHAPE: ByolStepShape = { batch: 256, size: 28, channels: 1, width: 8, projHidden: 512, projDim: 128, predHidden: 512 };

/** Adam at 3e-3 (TRAIN_DEFAULTS: base 0.012 at batch 64), weight decay 1e-6 on weights, EMA tau 0.99, as training. */
const LR = 3e-3;
const WEIGHT_DECAY = 1e-6;
const TAU = 0.99;

/** The step's two fixed views (seeded random images of the shape), as every step benchmark feeds them. */
export function stepViews(s: ByolStepShape): [Tensor, Tensor] {
  const shape = [s.batch, s.size, s.size, s.channels];
  const n = shape.reduce((a, b) => a * b, 1);
  return [tensor(randomData(n, 1), shape), tensor(randomData(n, 2), shape)];
}

/** The model the step row trains (bench/step-profile.ts profiles the same one). */
export function byolForStep(s: ByolStepShape): BYOL {
  return new BYOL({
    encoder: { arch: 'resnet-small', width: s.width, stem: s.stem ?? 'small', inChannels: s.channels },
    projHidden: s.projHidden,
    projDim: s.projDim,
    predHidden: s.predHidden,
    optimizer: 'adam',
    baseLr: (LR * 256) / s.batch, // the schedule scales the base rate by batch / 256
    weightDecay: WEIGHT_DECAY,
    tauBase: TAU,
    batchSize: s.batch,
    totalSteps: 1000,
  });
}

/** The Conv2d modules of both networks (online and target), for benches that switch a per-module option. */
export function stepConvs(model: BYOL): Conv2d[] {
  return [model.online, model.target].flatMap((net) => net.namedModules().map(([, m]) => m)).filter((m): m is Conv2d => m instanceof Conv2d);
}

/**
 * Model FLOPs of one step, from the layer shapes: conv and linear multiply-adds x2 (BN, activations, the loss and
 * the optimizer are left out). Per view: the online network forward, its backward at twice the forward (dx and
 * dW; the stem has no dx, its input needs no gradient), and the target forward; two views.
 */
export function stepFlops(s: ByolStepShape): { perImage: number; perStep: number } {
  const conv = (h: number, k: number, cin: number, cout: number) => h * h * k * k * cin * cout;
  const down = (h: number) => Math.floor((h - 1) / 2) + 1; // 3x3 pad 1 and 1x1 pad 0, stride 2
  let h = s.stem === 'small-s2' ? down(s.size) : s.size;
  const stem = conv(h, 3, s.channels, s.width);
  let encoder = stem;
  let cin = s.width;
  for (let i = 0; i < 4; i++) {
    const planes = s.width * 2 ** i;
    if (i > 0) h = down(h);
    encoder += conv(h, 3, cin, planes) + conv(h, 3, planes, planes);
    if (i > 0 || cin !== planes) encoder += conv(h, 1, cin, planes);
    cin = planes;
  }
  const projector = cin * s.projHidden + s.projHidden * s.projDim;
  const predictor = s.projDim * s.predHidden + s.predHidden * s.projDim;
  const online = encoder + projector + predictor;
  const target = encoder + projector;
  const perView = 2 * (online + (2 * online - stem) + target);
  return { perImage: 2 * perView, perStep: 2 * perView * s.batch };
}

function byolStepCase(s: ByolStepShape, extra: Partial<BenchCase> = {}): BenchCase {
  const viewShape = [s.batch, s.size, s.size, s.channels];
  const n = viewShape.reduce((a, b) => a * b, 1);
  return {
    name: 'byol step',
    shape: `resnet-small w${s.width}, ${s.batch}x${s.size}x${s.size}x${s.channels}, heads ${s.projHidden}/${s.projDim}, Adam`,
    images: s.batch,
    modelFlops: stepFlops(s).perStep,
    torch: { kind: 'byol-step', ...s, lr: LR, weightDecay: WEIGHT_DECAY, tau: TAU },
    ...extra,
    ours(): SideOps {
      const v1 = tensor(randomData(n, 1), viewShape);
      const v2 = tensor(randomData(n, 2), viewShape);
      const model = byolForStep(s);
      return {
        op: () => model.trainStep(v1, v2).loss.dispose(),
        dispose: () => {
          model.dispose();
          v1.dispose();
          v2.dispose();
        },
      };
    },
    peer: (tf: Tf): SideOps => tfjsByolStep(tf, s, randomData(n, 1), randomData(n, 2)),
  };
}

export const byolStepCases: BenchCase[] = [byolStepCase(TRAIN_STEP_SHAPE), byolStepCase(OLD_STEP_SHAPE)];
