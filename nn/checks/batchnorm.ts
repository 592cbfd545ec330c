// batchNorm op cases: training (batch statistics) and eval (running statistics), each with and without the fused
// ReLU, on vec4 and odd channel counts, long columns and many row chunks; gradients of only some inputs
// (see nn/checks/index.ts).

import { tensor } from '../index.ts';
import { batchNorm, ref } from '../../kernels/batchnorm.ts';
import { rng, randArr, type NamedOpCase } from '../check.ts';
import type { Arr } from '../../engine/ref.ts';

const up = (a: Arr) => tensor(Float32Array.from(a.data), a.shape);
const channels = (shape: number[]) => shape[shape.length - 1];

export const batchNormCases: NamedOpCase[] = [];

// [shape, eps, groups]: R = 2 makes xhat = ±1 whatever x is, so dx is pure rounding noise unless eps is large.
// groups > 1: statistics per part of the leading axis, against the float64 op on each part (one chunk per group
// and many, vec4 and odd channels, 2 and 3 groups)
const training: [number[], number, number][] = [
  [[2, 3], 0.5, 1],
  [[7, 5], 1e-5, 1],
  [[2, 5, 3, 17], 1e-5, 1],
  [[3, 9, 11, 64], 1e-5, 1], // vec4 channels, two row chunks
  [[37, 258], 1e-5, 1], // several channel workgroups, odd channel count
  [[40, 520], 1e-5, 1], // vec4, several channel workgroups
  [[2048, 12], 1e-5, 1], // long columns, few channels
  [[4, 16, 16, 33], 1e-5, 1], // R = 1024: many row chunks
  [[6, 5], 1e-5, 2], [[4, 3, 5, 17], 1e-5, 2], [[6, 9, 11, 64], 1e-5, 3], [[8, 16, 16, 33], 1e-5, 2], [[6, 40], 1e-5, 3],
];

for (const [shape, eps, groups] of training) {
  for (const relu of [false, true]) {
    const C = channels(shape);
    const o = { training: true, eps, relu, groups };
    batchNormCases.push({
      name: `batchNorm training ${JSON.stringify(shape)}${groups > 1 ? ` groups=${groups}` : ''} relu=${relu}`,
      shapes: [shape, [C], [C]],
      range: [[-1, 1], [0.5, 1.5], [-0.5, 0.5]],
      ref: ([x, g, b]) => ref.batchNorm(x, g, b, o),
      refGrad: ([x, g, b], dy) => ref.batchNormBackward(x, g, b, dy, o),
      gpu: ([x, g, b]) => batchNorm(x, g, b, null, o),
      tol: 2e-5,
    });
  }
}

// gradients for only some inputs take other paths (dx without dgamma/dbeta and the reverse)
batchNormCases.push({
  name: 'batchNorm training [6,7,9] gradient of x only',
  shapes: [[6, 7, 9], [9], [9]],
  range: [[-2, 3], [0.5, 1.5], [-0.5, 0.5]],
  noGrad: [1, 2],
  ref: ([x, g, b]) => ref.batchNorm(x, g, b, { training: true }),
  refGrad: ([x, g, b], dy) => ref.batchNormBackward(x, g, b, dy, { training: true }),
  gpu: ([x, g, b]) => batchNorm(x, g, b, null, { training: true }),
  tol: 2e-5,
}, {
  name: 'batchNorm training [50,8] gradient of gamma and beta only, relu',
  shapes: [[50, 8], [8], [8]],
  range: [[-1, 1], [0.5, 1.5], [-0.5, 0.5]],
  noGrad: [0],
  ref: ([x, g, b]) => ref.batchNorm(x, g, b, { training: true, relu: true }),
  refGrad: ([x, g, b], dy) => ref.batchNormBackward(x, g, b, dy, { training: true, relu: true }),
  gpu: ([x, g, b]) => batchNorm(x, g, b, null, { training: true, relu: true }),
  tol: 2e-5,
});

batchNormCases.push({
  name: 'batchNorm training [6,7,9] groups=3 gradient of x only',
  shapes: [[6, 7, 9], [9], [9]],
  range: [[-2, 3], [0.5, 1.5], [-0.5, 0.5]],
  noGrad: [1, 2],
  ref: ([x, g, b]) => ref.batchNorm(x, g, b, { training: true, groups: 3 }),
  refGrad: ([x, g, b], dy) => ref.batchNormBackward(x, g, b, dy, { training: true, groups: 3 }),
  gpu: ([x, g, b]) => batchNorm(x, g, b, null, { training: true, groups: 3 }),
  tol: 2e-5,
});

// residual: relu(bn(x) + r) in one pass, against the float64 op then the add and the ReLU; training (with groups)
// and eval, with and without the ReLU, and the residual's gradient alone
const addArr = (a: Arr, b: Arr): Arr => ({ data: a.data.map((v, i) => v + b.data[i]), shape: [...a.shape] });
const residualCases: [number[], boolean, boolean, number, number[]][] = [
  [[5, 3, 3, 8], true, true, 1, []], [[7, 5], true, false, 1, []], [[6, 4, 4, 17], true, true, 2, []],
  [[4, 3, 5, 12], false, true, 1, []], [[9, 6], true, true, 1, [0, 1, 2]],
];
for (const [shape, training, relu, groups, noGrad] of residualCases) {
  const C = channels(shape);
  const r = rng(11);
  const rm = randArr([C], r, -0.5, 0.5);
  const rv = randArr([C], r, 0.2, 2);
  const o = { training, groups, runningMean: rm, runningVar: rv };
  const fwd = ([x, g, b, res]: Arr[]) => {
    const v = addArr(ref.batchNorm(x, g, b, o), res);
    return relu ? { data: v.data.map((e) => Math.max(e, 0)), shape: v.shape } : v;
  };
  batchNormCases.push({
    name: `batchNorm ${training ? 'training' : 'eval'} ${JSON.stringify(shape)} + residual, relu=${relu}, groups=${groups}${noGrad.length ? ', gradient of the residual only' : ''}`,
    shapes: [shape, [C], [C], shape],
    range: [[-1, 1], [0.5, 1.5], [-0.5, 0.5], [-1, 1]],
    noGrad,
    ref: fwd,
    refGrad: (xs, dy) => {
      const y = fwd(xs).data;
      const g = { data: dy.data.map((v, i) => (relu && !(y[i] > 0) ? 0 : v)), shape: [...dy.shape] };
      return [...ref.batchNormBackward(xs[0], xs[1], xs[2], g, o), g];
    },
    gpu: ([x, g, b, res]) => batchNorm(x, g, b, training ? null : { runningMean: up(rm), runningVar: up(rv) }, { training, relu, groups, residual: res }),
    tol: 2e-5,
  });
}

// eval mode: fixed running statistics, a plain per-channel affine map (and its backward)
const evalCases: [number[], number[]][] = [[[1, 3], []], [[5, 4, 3, 8], []], [[33, 17], [1, 2]], [[2, 9, 9, 20], [0]]];
for (const [shape, noGrad] of evalCases) {
  for (const relu of [false, true]) {
    const C = channels(shape);
    const r = rng(7);
    const rm = randArr([C], r, -0.5, 0.5);
    const rv = randArr([C], r, 0.2, 2);
    const o = { training: false, relu, runningMean: rm, runningVar: rv };
    batchNormCases.push({
      name: `batchNorm eval ${JSON.stringify(shape)} relu=${relu} noGrad=${JSON.stringify(noGrad)}`,
      shapes: [shape, [C], [C]],
      range: [[-1, 1], [0.5, 1.5], [-0.5, 0.5]],
      noGrad,
      ref: ([x, g, b]) => ref.batchNorm(x, g, b, o),
      refGrad: ([x, g, b], dy) => ref.batchNormBackward(x, g, b, dy, o),
      // made inside the op's tidy scope: the tape keeps the statistics alive until backward
      gpu: ([x, g, b]) => batchNorm(x, g, b, { runningMean: up(rm), runningVar: up(rv) }, { training: false, relu }),
      tol: 1e-5,
    });
  }
}
