// softmax and softmaxCrossEntropy op cases: one class, batch 1, many workgroups, long rows, and logits large
// enough that a naive exp overflows f32 (see nn/checks/index.ts).

import { tensor } from '../index.ts';
import { softmax, softmaxCrossEntropy, ref } from '../../kernels/softmax.ts';
import { rng, type NamedOpCase } from '../check.ts';

export function labelsFor(N: number, K: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: N }, () => Math.floor(r() * K));
}

// [N, K, logit range]
const xentCases: [number, number, number][] = [
  [4, 10, 3],
  [1, 1, 3], // one class: loss 0, gradient 0
  [1, 3, 3], // batch 1
  [33, 7, 5],
  [300, 10, 3], // many workgroups
  [5, 1000, 3], // long rows
  [6, 9, 80], // large logits: naive exp overflows f32
];

const softmaxShapes: [number[], number][] = [[[3, 7], 3], [[2, 3, 5], 3], [[1, 1], 1], [[4, 12], 60], [[70, 33], 4]];

export const softmaxCases: NamedOpCase[] = [
  ...xentCases.map(([N, K, range]): NamedOpCase => {
    const labels = labelsFor(N, K, N * 31 + K);
    return {
      name: `softmaxCrossEntropy [${N}, ${K}] logits in ±${range}`,
      shapes: [[N, K]],
      range: [-range, range],
      ref: ([x]) => ref.softmaxCrossEntropy(x, labels),
      refGrad: ([x], dy) => [ref.softmaxCrossEntropyBackward(x, labels, dy)],
      // made inside the op's tidy scope: the tape keeps it alive until backward
      gpu: ([x]) => softmaxCrossEntropy(x, tensor(labels, [N], { dtype: 'i32' })),
      tol: 1e-5,
    };
  }),
  ...softmaxShapes.map(([shape, range]): NamedOpCase => ({
    name: `softmax ${JSON.stringify(shape)} logits in ±${range}`,
    shapes: [shape],
    range: [-range, range],
    ref: ([x]) => ref.softmax(x),
    refGrad: ([x], dy) => [ref.softmaxBackward(x, dy)],
    gpu: ([x]) => softmax(x),
    tol: 1e-5,
  })),
];
