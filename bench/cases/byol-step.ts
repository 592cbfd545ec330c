// One BYOL training step at the training script's default shape (resnet-small width 8 on 28x28x1 Fashion-MNIST-
// sized images, heads 512/128, batch 256, Adam), without the augmentations: two fixed views, four forward passes
// (online and target on each view), the symmetric loss, backward, the optimizer step and the EMA. Reported in
// images/s. The peer builds the same network from tfjs ops (bench/peer-byol.ts) and runs the same step.

import { tensor } from '../../nn/index.ts';
import { BYOL } from '../../byol/model.ts';
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
}

export const TRAIN_STEP_SHAPE: ByolStepShape = { batch: 256, size: 28, channels: 1, width: 8, projHidden: 512, projDim: 128 };

/** The model the step row trains (bench/step-profile.ts profiles the same one). */
export function byolForStep(s: ByolStepShape): BYOL {
  return new BYOL({
    encoder: { arch: 'resnet-small', width: s.width, stem: 'small', inChannels: s.channels },
    projHidden: s.projHidden,
    projDim: s.projDim,
    predHidden: s.projHidden,
    optimizer: 'adam',
    baseLr: 3e-3,
    batchSize: s.batch,
    totalSteps: 1000,
  });
}

function byolStepCase(s: ByolStepShape, extra: Partial<BenchCase> = {}): BenchCase {
  const viewShape = [s.batch, s.size, s.size, s.channels];
  const n = viewShape.reduce((a, b) => a * b, 1);
  return {
    name: 'byol step',
    shape: `resnet-small w${s.width}, ${s.batch}x${s.size}x${s.size}x${s.channels}, heads ${s.projHidden}/${s.projDim}, Adam`,
    images: s.batch,
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

export const byolStepCases: BenchCase[] = [byolStepCase(TRAIN_STEP_SHAPE)];
