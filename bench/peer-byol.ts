// The BYOL step of bench/cases/byol-step.ts written with tfjs ops, for the peer column: the same resnet-small
// encoder (3x3 stem, one BasicBlock per stage, 1x1 conv + BN shortcuts), projector and predictor
// (Linear -> BN -> ReLU -> Linear), batch-statistics BN with running-statistics updates, symmetric 2 - 2cos loss
// against the stopped target, tf.train.adam on the online variables, then the EMA of the target. tfjs has no
// fused kernels for any of this; it is what a tfjs user would write. Stride-2 convs pad 'same' (TF pads 0 before /
// 1 after where PyTorch pads 1 / 1): the same output shapes and work, so the times compare.

import type { Tf } from './peer.ts';
import type { SideOps } from './case.ts';
import type { ByolStepShape } from './cases/byol-step.ts';

type T = any; // tf.Tensor / tf.Variable: the peer's types are loaded at run time

interface Bn {
  gamma: T;
  beta: T;
  mean: T;
  variance: T;
}

function seeded(tf: Tf, shape: number[], std: number, seed: number): T {
  return tf.variable(tf.randomNormal(shape, 0, std, 'float32', seed));
}

class Net {
  readonly vars: T[] = [];

  constructor(
    private readonly tf: Tf,
    private readonly s: ByolStepShape,
    private seed: number,
    private readonly withPredictor: boolean,
  ) {
    this.build();
  }

  private convs = new Map<string, T>();
  private bns = new Map<string, Bn>();
  private dense = new Map<string, T>();

  private conv(name: string, k: number, cin: number, cout: number): void {
    const w = seeded(this.tf, [k, k, cin, cout], Math.sqrt(2 / (k * k * cin)), this.seed++);
    this.convs.set(name, w);
    this.vars.push(w);
  }

  private bn(name: string, c: number): void {
    const tf = this.tf;
    const b: Bn = { gamma: tf.variable(tf.ones([c])), beta: tf.variable(tf.zeros([c])), mean: tf.variable(tf.zeros([c]), false), variance: tf.variable(tf.ones([c]), false) };
    this.bns.set(name, b);
    this.vars.push(b.gamma, b.beta);
  }

  private linear(name: string, cin: number, cout: number, bias: boolean): void {
    const w = seeded(this.tf, [cin, cout], Math.sqrt(1 / cin), this.seed++);
    this.dense.set(name, w);
    this.vars.push(w);
    if (bias) {
      const b = this.tf.variable(this.tf.zeros([cout]));
      this.dense.set(name + '.b', b);
      this.vars.push(b);
    }
  }

  private build(): void {
    const { width: w, channels, projHidden, projDim, predHidden } = this.s;
    this.conv('stem', 3, channels, w);
    this.bn('stem', w);
    let cin = w;
    for (let i = 0; i < 4; i++) {
      const planes = w * 2 ** i;
      this.conv(`l${i}.c1`, 3, cin, planes);
      this.bn(`l${i}.b1`, planes);
      this.conv(`l${i}.c2`, 3, planes, planes);
      this.bn(`l${i}.b2`, planes);
      if (i > 0 || cin !== planes) {
        this.conv(`l${i}.ds`, 1, cin, planes);
        this.bn(`l${i}.dsb`, planes);
      }
      cin = planes;
    }
    this.linear('proj1', cin, projHidden, true);
    this.bn('proj', projHidden);
    this.linear('proj2', projHidden, projDim, false);
    if (this.withPredictor) {
      this.linear('pred1', projDim, predHidden, true);
      this.bn('pred', predHidden);
      this.linear('pred2', predHidden, projDim, false);
    }
  }

  /** Batch-statistics BN (axes: all but the last), with the running statistics updated as a side effect. */
  private batchNorm(x: T, name: string, relu: boolean): T {
    const tf = this.tf;
    const b = this.bns.get(name)!;
    const axes = x.rank === 4 ? [0, 1, 2] : [0];
    const { mean, variance } = tf.moments(x, axes);
    // not on the loss's path, so no gradient flows through these
    tf.tidy(() => {
      b.mean.assign(b.mean.mul(0.9).add(mean.mul(0.1)));
      b.variance.assign(b.variance.mul(0.9).add(variance.mul(0.1)));
    });
    const y = tf.batchNorm(x, mean, variance, b.beta, b.gamma, 1e-5);
    return relu ? tf.relu(y) : y;
  }

  private convBn(x: T, name: string, bnName: string, stride: number, relu: boolean): T {
    const w = this.convs.get(name)!;
    return this.batchNorm(this.tf.conv2d(x, w, stride, 'same'), bnName, relu);
  }

  private mlp(x: T, prefix: string): T {
    const tf = this.tf;
    const h = tf.matMul(x, this.dense.get(`${prefix}1`)).add(this.dense.get(`${prefix}1.b`));
    return tf.matMul(this.batchNorm(h, prefix, true), this.dense.get(`${prefix}2`));
  }

  /** The projection z (and with the predictor, the prediction p). */
  forward(x: T): T {
    const tf = this.tf;
    let h = this.convBn(x, 'stem', 'stem', 1, true);
    for (let i = 0; i < 4; i++) {
      const stride = i > 0 ? 2 : 1;
      const r = this.convBn(this.convBn(h, `l${i}.c1`, `l${i}.b1`, stride, true), `l${i}.c2`, `l${i}.b2`, 1, false);
      const skip = this.convs.has(`l${i}.ds`) ? this.convBn(h, `l${i}.ds`, `l${i}.dsb`, stride, false) : h;
      h = tf.relu(tf.add(r, skip));
    }
    const z = this.mlp(tf.mean(h, [1, 2]), 'proj');
    return this.withPredictor ? this.mlp(z, 'pred') : z;
  }

  dispose(): void {
    for (const v of this.vars) v.dispose();
    for (const b of this.bns.values()) {
      b.mean.dispose();
      b.variance.dispose();
    }
  }
}

export function tfjsByolStep(tf: Tf, s: ByolStepShape, view1: Float32Array, view2: Float32Array): SideOps {
  const shape = [s.batch, s.size, s.size, s.channels];
  const v1 = tf.tensor(view1, shape);
  const v2 = tf.tensor(view2, shape);
  const online = new Net(tf, s, 1000, true);
  const target = new Net(tf, s, 2000, false);
  const opt = tf.train.adam(3e-3);
  const tau = 0.99;
  // 2 - 2 cos(p, z), mean over the batch
  const cosLoss = (p: T, z: T): T => tf.sub(2, tf.mul(2, tf.mean(tf.sum(tf.mul(p, z), 1).div(tf.norm(p, 2, 1).mul(tf.norm(z, 2, 1)).add(1e-12)))));
  const step = () =>
    tf.tidy(() => {
      // computed outside variableGrads: constants to it, which is the stop-gradient
      const t1 = target.forward(v1);
      const t2 = target.forward(v2);
      const { value, grads } = tf.variableGrads(() => tf.add(cosLoss(online.forward(v1), t2), cosLoss(online.forward(v2), t1)) as any, online.vars);
      opt.applyGradients(grads as any);
      // the target's leading variables mirror the online network's (same declaration order, no predictor)
      target.vars.forEach((tv, i) => tv.assign(tv.mul(tau).add(online.vars[i].mul(1 - tau))));
      return value;
    });
  return {
    op: () => step().dispose(),
    dispose: () => {
      online.dispose();
      target.dispose();
      opt.dispose();
      v1.dispose();
      v2.dispose();
    },
  };
}
