// batchNormConv2d cases (kernels/batchnorm-conv.ts: conv(batchNorm(x)) whose backward takes batchNorm's sums from
// the conv's dx epilogue), and conv -> batchNorm with the statistics from the conv's forward epilogue (moments), forward and the gradients of x, gamma, beta, w and bias against the float64
// composition. batchNormConvCases run the adapter's own conv variant (what the page checks; where it cannot write
// the sums, the composition runs); test/batchnorm-conv.test.ts also forces the lane layouts and asserts the path.

import { conv2d, ref as convRef, type ConvTuningOverrides } from '../../kernels/conv2d.ts';
import { batchNorm, ref as bnRef, type BatchNormOptions } from '../../kernels/batchnorm.ts';
import { batchNormConv2d, batchNormConvFuses } from '../../kernels/batchnorm-conv.ts';
import type { NamedOpCase } from '../check.ts';
import type { Arr } from '../../engine/ref.ts';

// [name, N, H, C (the batchNorm's channels), K, Cout, pad, bias]: N * H * H / 2 = 128 * k rows per group of two,
// whole dx row tiles of every lane layout (up to 128 rows: one narrow column quad at 8 lanes)
export type BnConvShape = [string, number, number, number, number, number, number, boolean];
export const BN_CONV_SHAPES: BnConvShape[] = [
  ['3x3 8->12, bias', 4, 8, 8, 3, 12, 1, true],
  ['3x3 16->16', 2, 16, 16, 3, 16, 1, false],
  ['3x3 32->8 (dx wide: 8 column quads)', 2, 8, 32, 3, 8, 1, false],
  ['1x1 4->8 (dx one column quad)', 4, 8, 4, 1, 8, 0, true],
];
/** Shapes where no conv variant writes the sums: the composition runs. */
export const BN_CONV_FALLBACK_SHAPES: BnConvShape[] = [
  ['3x3 8->8 at 5x5 (a group is not whole row tiles)', 2, 5, 8, 3, 8, 1, false],
  ['3x3 6->8 (channels not in quads)', 4, 8, 6, 3, 8, 1, false],
];

/**
 * One case; `fused` (true or false) makes the GPU side check first that batchNormConv2d takes that path.
 */
export function batchNormConvCase(
  [name, N, H, C, K, Cout, pad, bias]: BnConvShape, o: BatchNormOptions, tuning?: ConvTuningOverrides, fused?: boolean,
): NamedOpCase {
  const conv = (a: Arr, w: Arr, b: Arr | null) => convRef.conv2d(a, w, b, 1, pad);
  return {
    name: `${name}, groups ${o.groups ?? 1}${o.relu ? ', ReLU' : ''}${tuning?.bnPrologue !== undefined ? `, prologue ${tuning.bnPrologue ? 'on' : 'off'}` : ''}: x [${N},${H},${H},${C}]`,
    shapes: [[N, H, H, C], [C], [C], [K, K, C, Cout], ...(bias ? [[Cout]] : [])],
    // an offset mean (|mean| > std in places), where the centered sums matter
    range: [[0.5, 2], [0.5, 1.5], [-0.5, 0.5], [-0.3, 0.6], [-0.5, 0.5]],
    ref: ([x, gamma, beta, w, b]) => conv(bnRef.batchNorm(x, gamma, beta, o), w, b ?? null),
    refGrad: ([x, gamma, beta, w, b], dy) => {
      const [da, dw, db] = convRef.conv2dBackward(bnRef.batchNorm(x, gamma, beta, o), w, dy, 1, pad);
      return [...bnRef.batchNormBackward(x, gamma, beta, da, o), dw, ...(b ? [db] : [])];
    },
    gpu: ([x, gamma, beta, w, b]) => {
      const convOpts = { padding: pad, ...(tuning ? { tuning } : {}) };
      if (fused !== undefined && batchNormConvFuses(x, w, b ?? null, o, convOpts) !== fused) {
        throw new Error(`batchNormConv2d: expected the ${fused ? 'fused path' : 'composition'} here`);
      }
      return batchNormConv2d(x, gamma, beta, null, o, w, b ?? null, convOpts);
    },
    tol: 1e-4,
  };
}

/**
 * The other direction: batchNorm(conv2d(x, w)) with the statistics from the moments the conv's epilogue wrote
 * (Conv2dOptions.moments), forward and the gradients of x, w, gamma and beta. The GPU side checks that the conv
 * attached moments and batchNorm took them. [name, N, H, Cin, K, Cout, stride, pad]: 128 * k output rows, whole
 * row tiles of every conv kernel.
 */
export function convMomentsBatchNormCase([name, N, H, Cin, K, Cout, s, pad]: [string, number, number, number, number, number, number, number], o: BatchNormOptions): NamedOpCase {
  const conv = (x: Arr, w: Arr) => convRef.conv2d(x, w, null, s, pad);
  return {
    name: `conv2d with moments -> batchNorm, ${name}, groups ${o.groups ?? 1}${o.relu ? ', ReLU' : ''}: x [${N},${H},${H},${Cin}]`,
    shapes: [[N, H, H, Cin], [K, K, Cin, Cout], [Cout], [Cout]],
    range: [[0.5, 2], [-0.3, 0.6], [0.5, 1.5], [-0.5, 0.5]],
    ref: ([x, w, gamma, beta]) => bnRef.batchNorm(conv(x, w), gamma, beta, o),
    refGrad: ([x, w, gamma, beta], dy) => {
      const [dyc, dg, db] = bnRef.batchNormBackward(conv(x, w), gamma, beta, dy, o);
      return [...convRef.conv2dBackward(x, w, dyc, s, pad).slice(0, 2), dg, db];
    },
    gpu: ([x, w, gamma, beta]) => {
      const y = conv2d(x, w, null, { stride: s, padding: pad, moments: true });
      if (!y.hasMoments) throw new Error('conv2d attached no moments');
      const out = batchNorm(y, gamma, beta, null, o);
      if (y.hasMoments) throw new Error('batchNorm did not take the moments');
      return out;
    },
    tol: 1e-4,
  };
}

export const batchNormConvCases: NamedOpCase[] = [
  convMomentsBatchNormCase(['3x3 8->16', 4, 8, 8, 3, 16, 1, 1], { training: true, relu: true, groups: 2 }),
  convMomentsBatchNormCase(['3x3 stride 2, 32->64', 8, 8, 32, 3, 64, 2, 1], { training: true, relu: false, groups: 1 }),
  ...BN_CONV_SHAPES.map((s) => batchNormConvCase(s, { training: true, relu: true, groups: 2 })),
  batchNormConvCase(BN_CONV_SHAPES[1], { training: true, relu: false, groups: 1 }),
  ...BN_CONV_FALLBACK_SHAPES.map((s) => batchNormConvCase(s, { training: true, relu: true, groups: 2 }, undefined, false)),
  // the batchNorm prologue where the adapter runs the tiled kernels (it is off by default on CPU adapters)
  ...[BN_CONV_SHAPES[0], BN_CONV_SHAPES[1]].map((s) => batchNormConvCase(s, { training: true, relu: true, groups: 2 }, { bnPrologue: true })),
];
