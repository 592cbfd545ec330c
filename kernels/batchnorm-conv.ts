// conv(batchNorm(x)) in training as one differentiable op, whose backward takes batchNorm's two per-channel sums
// from the epilogue of the conv's dx GEMM (conv2dBackwardInputWithBnSums) instead of a pass that reads x and dy
// again: the "reductions in the pass that produces dy" of a ResNet block's first batchNorm, whose output only its
// second conv reads. The forward is the two ops as they are (batchNorm, then the conv, moments and all). Where the
// conv's dx cannot write the sums (stride 2, channels not in quads, row tiles straddling the batchNorm's groups, a
// tiled tile whose sums do not fit in workgroup memory), out of training, or with nothing to differentiate, it is the
// plain composition.
// With the tiled conv kernels (the GPU default) the batchNorm also runs as the prologue of the conv's forward and
// dW launches (conv2dWithBnPrologue): they normalize x as they stage it, so the normalized activation is never
// written nor read back; the forward is then batchNorm's statistics and one conv launch. Also without gradients
// (a target network's forward in training).

import type { Tensor } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { batchNorm, batchNormForward, batchNormStatistics, batchNormBackwardFromSums, type BatchNormOptions, type BatchNormStats, type BatchNormLayout } from './batchnorm.ts';
import {
  conv2d, conv2dRaw, conv2dGeometry, conv2dBackwardInputWithBnSums, conv2dBackwardWeight, dxBnSumRows,
  bnPrologueSuits, conv2dWithBnPrologue, conv2dBackwardWeightWithBnPrologue, type Conv2dOptions, type ConvGeom,
} from './conv2d.ts';
import { sum } from './reduce.ts';

/** Whether batchNormConv2d takes the fused path for these arguments (else it runs the two ops). */
export function batchNormConvFuses(x: Tensor, w: Tensor, bias: Tensor | null, bnOpts: BatchNormOptions, convOpts: Conv2dOptions): boolean {
  return fuses(conv2dGeometry(x, w, bias, convOpts), bnOpts, convOpts);
}

function fuses(g: ConvGeom, bnOpts: BatchNormOptions, convOpts: Conv2dOptions): boolean {
  return !!bnOpts.training && !bnOpts.residual && !convOpts.epilogue && dxBnSumRows(g, convOpts, bnOpts.groups ?? 1) > 0;
}

/**
 * Whether batchNormConv2d runs the batchNorm as the conv's prologue for these arguments (conv2dWithBnPrologue)
 * when something needs a gradient: the tiled kernels and the fused backward (batchNormConvFuses). Without
 * gradients the first condition alone decides.
 */
export function batchNormConvPrologue(x: Tensor, w: Tensor, bias: Tensor | null, bnOpts: BatchNormOptions, convOpts: Conv2dOptions): boolean {
  const g = conv2dGeometry(x, w, bias, convOpts);
  return prologue(g, bnOpts, convOpts) && fuses(g, bnOpts, convOpts);
}

function prologue(g: ConvGeom, bnOpts: BatchNormOptions, convOpts: Conv2dOptions): boolean {
  return !!bnOpts.training && !bnOpts.residual && !convOpts.epilogue && bnPrologueSuits(g, convOpts, bnOpts.groups ?? 1);
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
  const grad = needsGrad(x, gamma, beta, w, bias);
  if (prologue(g, bnOpts, convOpts) && (!grad || fuses(g, bnOpts, convOpts))) {
    return withPrologue(x, gamma, beta, stats, bnOpts, w, bias, convOpts, g, grad);
  }
  if (!grad || !fuses(g, bnOpts, convOpts)) {
    return conv2d(batchNorm(x, gamma, beta, stats, bnOpts), w, bias, convOpts);
  }
  const groups = bnOpts.groups ?? 1;
  const relu = !!bnOpts.relu;
  const { y: a, st, L } = batchNormForward(x, gamma, beta, stats, bnOpts);
  const out = conv2dRaw(a, w, bias, convOpts);
  const inputs = [x, gamma, beta, w, ...(bias ? [bias] : [])];
  record('batchNormConv2d', inputs, out, (dy, [sx, sst, sbeta, sa, sw], needs) => {
    const bnGrads = bnGradsFromDx(dy, sw, sx, sst, relu ? sbeta : null, needs.slice(0, 3), L, g, convOpts, groups);
    const grads = [...bnGrads, needs[3] ? conv2dBackwardWeight(sa, dy, g, convOpts) : null];
    if (bias) grads.push(needs[4] ? sum(dy, [0, 1, 2]) : null);
    return grads;
  }, [x, st, beta, a, w]);
  st.dispose();
  a.dispose();
  return out;
}

/** The prologue path: batchNorm's statistics, then the conv normalizing x as it stages it; dW does the same. */
function withPrologue(
  x: Tensor, gamma: Tensor, beta: Tensor, stats: BatchNormStats | null, bnOpts: BatchNormOptions,
  w: Tensor, bias: Tensor | null, convOpts: Conv2dOptions, g: ConvGeom, grad: boolean,
): Tensor {
  const groups = bnOpts.groups ?? 1;
  const relu = !!bnOpts.relu;
  const { st, L } = batchNormStatistics(x, gamma, beta, stats, bnOpts);
  const out = conv2dWithBnPrologue(x, w, bias, g, convOpts, { stats: st, beta, relu, groups });
  if (grad) {
    const inputs = [x, gamma, beta, w, ...(bias ? [bias] : [])];
    record('batchNormConv2d', inputs, out, (dy, [sx, sst, sbeta, sw], needs) => {
      const bnGrads = bnGradsFromDx(dy, sw, sx, sst, relu ? sbeta : null, needs.slice(0, 3), L, g, convOpts, groups);
      const grads = [...bnGrads, needs[3] ? conv2dBackwardWeightWithBnPrologue(sx, dy, g, convOpts, { stats: sst, beta: sbeta, relu, groups }) : null];
      if (bias) grads.push(needs[4] ? sum(dy, [0, 1, 2]) : null);
      return grads;
    }, [x, st, beta, w]);
  }
  st.dispose();
  return out;
}

/**
 * The batchNorm's gradients (x, gamma, beta; null where not wanted) from the conv's dx, whose epilogue writes
 * batchNorm's backward sums: both paths' backward. reluBeta: beta where the batchNorm had a ReLU.
 */
function bnGradsFromDx(
  dy: Tensor, w: Tensor, x: Tensor, st: Tensor, reluBeta: Tensor | null, wants: boolean[],
  L: BatchNormLayout, g: ConvGeom, convOpts: Conv2dOptions, groups: number,
): (Tensor | null)[] {
  if (!wants.some(Boolean)) return [null, null, null];
  const { dx: da, part, tilesPerGroup } = conv2dBackwardInputWithBnSums(dy, w, g, convOpts, { x, stats: st, beta: reluBeta, groups });
  const grads = batchNormBackwardFromSums(L, da, x, st, reluBeta, wants, { part, tilesPerGroup });
  da.dispose();
  part.dispose();
  return grads;
}
