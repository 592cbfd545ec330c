// The rest of a BYOL step's kernels: batchnorm (training mode, fused ReLU) forward and forward + backward, the
// cosine loss forward + backward, and the EMA and LARS updates over an 11.2M-parameter arena (ResNet-18's
// parameters, 60 tensors without the classifier). The peer runs what a tfjs user would write: tf.moments + tf.batchNorm + tf.relu,
// tf.grads for backward, and per-variable tf ops for EMA and LARS (tfjs has no arena). Rates are GB/s of the
// unavoidable traffic (each operand read once, each result written once).

import { tensor, variable, backward, tidy, materialize, keep } from '../../nn/index.ts';
import { batchNorm } from '../../kernels/batchnorm.ts';
import { cosineLoss } from '../../kernels/cosine.ts';
import { emaUpdate } from '../../nn/ema.ts';
import { LARS } from '../../nn/optim.ts';
import { ResNet } from '../../byol/resnet.ts';
import type { BenchCase, SideOps } from '../case.ts';
import { randomData, readOurs, readPeer } from '../case.ts';
import type { Tf } from '../peer.ts';

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

function batchNormCase(withBackward: boolean, shape: number[]): BenchCase {
  const C = shape[shape.length - 1];
  const n = size(shape);
  return {
    name: withBackward ? 'batchnorm fwd+bwd' : 'batchnorm fwd',
    shape: `x [${shape.join(',')}], training, +ReLU`,
    // fwd: x read, y written; bwd adds dy read, dx written
    bytes: (withBackward ? 4 : 2) * n * 4,
    ours(): SideOps {
      const x = variable(randomData(n, 1), shape);
      const dy = tensor(randomData(n, 2), shape);
      const gamma = variable(Float32Array.from(randomData(C, 3), (v) => 1 + 0.5 * v), [C]);
      const beta = variable(randomData(C, 4), [C]);
      const stats = { runningMean: keep(tensor(new Float32Array(C), [C])), runningVar: keep(tensor(new Float32Array(C).fill(1), [C])) };
      const run = () =>
        tidy(() => {
          const y = batchNorm(x, gamma, beta, stats, { training: true, relu: true });
          if (!withBackward) return keep(y);
          backward(y, dy);
          const g = keep(x.grad!);
          x.grad = null;
          gamma.grad = null;
          beta.grad = null;
          return g;
        });
      return {
        op: () => run().dispose(),
        output: readOurs(run),
        dispose: () => [x, dy, gamma, beta, stats.runningMean, stats.runningVar].forEach((t) => t.dispose()),
      };
    },
    peer(tf: Tf): SideOps {
      const t: any = tf;
      const x = t.tensor(randomData(n, 1), shape);
      const dy = t.tensor(randomData(n, 2), shape);
      const gamma = t.tensor(Float32Array.from(randomData(C, 3), (v) => 1 + 0.5 * v), [C]);
      const beta = t.tensor(randomData(C, 4), [C]);
      const axes = shape.slice(0, -1).map((_, i) => i);
      const f = (a: any) => {
        const { mean, variance } = t.moments(a, axes);
        return t.relu(t.batchNorm(a, mean, variance, beta, gamma, 1e-5));
      };
      const grad = t.grad(f);
      const run = () => (withBackward ? grad(x, dy) : t.tidy(() => f(x)));
      return {
        op: () => run().dispose(),
        output: readPeer(run),
        dispose: () => [x, dy, gamma, beta].forEach((v) => v.dispose()),
      };
    },
  };
}

function cosineCase(B: number, D: number): BenchCase {
  return {
    name: 'cosine loss fwd+bwd',
    shape: `p, z [${B},${D}]`,
    // p and z read (twice each: the norms, then the products), dp written
    bytes: 3 * B * D * 4,
    ours(): SideOps {
      const p = variable(randomData(B * D, 1), [B, D]);
      const z = tensor(randomData(B * D, 2), [B, D]);
      const run = () =>
        tidy(() => {
          backward(cosineLoss(p, z));
          const g = keep(p.grad!);
          p.grad = null;
          return g;
        });
      return {
        op: () => run().dispose(),
        output: readOurs(run),
        dispose: () => [p, z].forEach((t) => t.dispose()),
      };
    },
    peer(tf: Tf): SideOps {
      const t: any = tf;
      const p = t.tensor(randomData(B * D, 1), [B, D]);
      const z = t.tensor(randomData(B * D, 2), [B, D]);
      // BYOL's loss: 2 - 2 cos with l2 normalization clamped at 1e-12 (as ours and optax's)
      const unit = (a: any) => t.div(a, t.maximum(t.norm(a, 2, 1, true), 1e-12));
      const grad = t.grad((a: any) => t.mean(t.sub(2, t.mul(2, t.sum(t.mul(unit(a), unit(z)), 1)))));
      return {
        op: () => grad(p).dispose(),
        output: readPeer(() => grad(p)),
        dispose: () => [p, z].forEach((v) => v.dispose()),
      };
    },
  };
}

/** ResNet-18's 60 parameter tensors (11.2M floats), as [name, shape, kind] in declaration order. */
function resnet18Params(): { shape: number[]; kind: string }[] {
  const m = new ResNet({ arch: 'resnet18', width: 64, inChannels: 3 });
  return m.parameterSpecs().map(([, p]) => ({ shape: [...p.shape], kind: p.kind }));
}

function arenaCase(which: 'ema' | 'lars'): BenchCase {
  const specs = resnet18Params();
  const n = specs.reduce((a, s) => a + size(s.shape), 0);
  return {
    name: which === 'ema' ? 'EMA update' : 'LARS step',
    shape: `ResNet-18 arena, ${specs.length} tensors, ${(n / 1e6).toFixed(1)}M floats`,
    // EMA: target and online read, target written; LARS: w, g, mu read (twice: norms, then the update), w, mu written
    bytes: (which === 'ema' ? 3 : 7) * n * 4,
    ours(): SideOps {
      const a = materialize(new ResNet({ arch: 'resnet18', width: 64, inChannels: 3 }), { seed: 1 });
      const b = materialize(new ResNet({ arch: 'resnet18', width: 64, inChannels: 3 }), { seed: 2 });
      const lars = which === 'lars' ? new LARS(a, { lr: 0.1, momentum: 0.9, weightDecay: 1.5e-6, eta: 1e-3 }) : null;
      if (lars) a.arena!.grad.write(randomData(n, 3));
      const op = () => (lars ? lars.update(0.1) : emaUpdate(b.arena!, a.arena!, 0.99));
      return {
        op,
        dispose: () => {
          lars?.dispose();
          a.dispose();
          b.dispose();
        },
      };
    },
    peer(tf: Tf): SideOps {
      const t: any = tf;
      let seed = 10;
      const vars = specs.map((s) => t.variable(t.randomNormal(s.shape, 0, 0.05, 'float32', seed++)));
      const other = specs.map((s) => t.variable(t.randomNormal(s.shape, 0, 0.05, 'float32', seed++)));
      const grads = specs.map((s) => t.randomNormal(s.shape, 0, 0.01, 'float32', seed++));
      const mom = specs.map((s) => t.variable(t.zeros(s.shape)));
      const tau = 0.99;
      const ema = () =>
        t.tidy(() => vars.forEach((v: any, i: number) => v.assign(t.add(t.mul(v, tau), t.mul(other[i], 1 - tau)))));
      const lars = () =>
        t.tidy(() =>
          vars.forEach((w: any, i: number) => {
            let u = grads[i];
            if (specs[i].kind === 'weight') {
              u = t.add(u, t.mul(w, 1.5e-6));
              const wn = t.norm(w);
              const un = t.norm(u);
              const ratio = t.where(t.logicalAnd(t.greater(wn, 0), t.greater(un, 0)), t.div(t.mul(wn, 1e-3), un), t.onesLike(wn));
              u = t.mul(u, ratio);
            }
            const m = t.add(t.mul(mom[i], 0.9), u);
            mom[i].assign(m);
            w.assign(t.sub(w, t.mul(m, 0.1)));
          }),
        );
      return {
        op: which === 'ema' ? ema : lars,
        dispose: () => [...vars, ...other, ...grads, ...mom].forEach((v: any) => v.dispose()),
      };
    },
  };
}

export const trainOpCases: BenchCase[] = [
  batchNormCase(false, [32, 32, 32, 64]),
  batchNormCase(true, [32, 32, 32, 64]),
  cosineCase(4096, 256),
  arenaCase('ema'),
  arenaCase('lars'),
];
