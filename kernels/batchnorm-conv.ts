// conv(batchNorm(x)) in training as one differentiable op, whose backward takes batchNorm's two per-channel sums
// from the epilogue of the conv's dx GEMM (conv2dBackwardInputWithBnSums) instead of a pass that reads x and dy
// again: the "reductions in the pass that produces dy" of a ResNet block's first batchNorm, whose output only its
// second conv reads. The forward is the two ops as they are (batchNorm, then the conv, moments and all). Where the
// conv's dx cannot write the sums (stride 2, channels not in quads, row tiles straddling the batchNorm's groups, a
// tiled tile whose sums do not fit in workgroup memory), out of training, or with nothing to differentiate, it is the
// plain composition.

import type { Tensor } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { batchNorm, batchNormForward, batchNormBackwardFromSums, type BatchNormOptions, type BatchNormStats } from './batchnorm.ts';
import { conv2d, conv2dRaw, conv2dGeometry, conv2dBackwardInputWithBnSums, conv2dBackwardWeight, dxBnSumRows, type Conv2dOptions, type ConvGeom } from './conv2d.ts';
import { sum } from './reduce.ts';

/** Whether batchNormConv2d takes the fused path for these arguments (else it runs the two ops). */
export function batchNormConvFuses(x: Tensor, w: Tensor, bias: Tensor | null, bnOpts: BatchNormOptions, convOpts: Conv2dOptions): boolean {
  return fuses(conv2dGeometry(x, w, bias, convOpts), bnOpts, convOpts);
}

function fuses(g: ConvGeom, bnOpts: BatchNormOptions, convOpts: Conv2dOptions): boolean {
  return !!bnOpts.training && !bnOpts.residual && !convOpts.epilogue && dxBnSumRows(g, convOpts, bnOpts.groups ?? 1) > 0;
}

/**
 * conv2d(batchNorm(x, gamma, beta, stats, bnOpts), w, bias, convOpts), differentiable in x, gamma, beta, w and
 * bias, with the same values and running statistics as the composition. convOpts may not have an epilogue, nor
 * bnOpts a residual (the composition runs then).
 */
export function batchNormConv2d(
  x: Tensor, gamma: Tensor, beta: Tensor, stats: BatchNormStats | null, bnOpts: BatchNormOptions,
  w: Tensor, bias: Tensor | null, convOpts: Conv2dOptions = {},
): Tensor {
  const g = conv2dGeometry(x, w, bias, convOpts);
  if (!needsGrad(x, gamma, beta, w, bias) || !fuses(g, bnOpts, convOpts)) {
    return conv2d(batchNorm(x, gamma, beta, stats, bnOpts), w, bias, convOpts);
  }
  const groups = bnOpts.groups ?? 1;
  const relu = !!bnOpts.relu;
  const { y: a, st, L } = batchNormForward(x, gamma, beta, stats, bnOpts);
  const out = conv2dRaw(a, w, bias, convOpts);
  const inputs = [x, gamma, beta, w, ...(bias ? [bias] : [])];
  record('batchNormConv2d', inputs, out, (dy, [sx, sst, sbeta, sa, sw], needs) => {
    const [nx, ng, nb, nw] = needs;
    let bnGrads: (Tensor | null)[] = [null, null, null];
    if (nx || ng || nb) {
      const { dx: da, part, tilesPerGroup } = conv2dBackwardInputWithBnSums(dy, sw, g, convOpts, { x: sx, stats: sst, beta: relu ? sbeta : null, groups });
      bnGrads = batchNormBackwardFromSums(L, da, sx, sst, relu ? sbeta : null, [nx, ng, nb], { part, tilesPerGroup });
      da.dispose();
      part.dispose();
    }
    const grads = [...bnGrads, nw ? conv2dBackwardWeight(sa, dy, g, convOpts) : null];
    if (bias) grads.push(needs[4] ? sum(dy, [0, 1, 2]) : null);
    return grads;
  }, [x, st, beta, a, w]);
  st.dispose();
  a.dispose();
  return out;
}
