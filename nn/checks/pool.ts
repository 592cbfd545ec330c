// Pooling op cases: maxPool2d (stem pooling, overlapping and non-overlapping windows, odd channels) and
// globalAvgPool (see nn/checks/index.ts).

import { maxPool2d, globalAvgPool, ref } from '../../kernels/pool.ts';
import type { NamedOpCase } from '../check.ts';

// [N, H, W, C, kernel, stride, padding]
const maxCases: [number, number, number, number, number, number, number][] = [
  [2, 9, 7, 8, 3, 2, 1], // ResNet stem pooling, vec4 channels, odd spatial size
  [1, 8, 8, 5, 3, 2, 1], // batch 1, odd channels (scalar kernel)
  [2, 6, 5, 3, 2, 2, 0], // non-overlapping windows
  [1, 7, 9, 4, 3, 1, 1], // stride 1: every input sits in up to 9 windows
  [3, 32, 32, 16, 3, 2, 1], // many workgroups
];

export const poolCases: NamedOpCase[] = [
  ...maxCases.map(([N, H, W, C, k, s, p]): NamedOpCase => ({
    name: `maxPool2d [${N}, ${H}, ${W}, ${C}] kernel ${k} stride ${s} padding ${p}`,
    shapes: [[N, H, W, C]],
    ref: ([x]) => ref.maxPool2d(x, k, s, p),
    refGrad: ([x], dy) => [ref.maxPool2dBackward(x, dy, k, s, p)],
    gpu: ([x]) => maxPool2d(x, { kernel: k, stride: s, padding: p }),
    tol: 1e-6,
  })),
  ...[[2, 5, 7, 8], [1, 1, 1, 3], [3, 4, 4, 17], [4, 16, 16, 64]].map((shape): NamedOpCase => ({
    name: `globalAvgPool ${JSON.stringify(shape)}`,
    shapes: [shape],
    ref: ([x]) => ref.globalAvgPool(x),
    refGrad: ([x], dy) => [ref.globalAvgPoolBackward(x, dy)],
    gpu: ([x]) => globalAvgPool(x),
    tol: 1e-5,
  })),
];
