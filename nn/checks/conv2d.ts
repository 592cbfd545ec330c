// conv2d op cases (forward, dx, dW and the bias gradient): 1x1, 3x3 and 7x7 kernels, stride 2 and 3, padding,
// channel counts that are not multiples of 4, narrow layers. conv2dCases run the adapter's own variant (what the
// page checks); test/conv2d.test.ts also forces every variant on the same shapes through conv2dCase's tuning.

import { conv2d, ref, type ConvTuningOverrides } from '../../kernels/conv2d.ts';
import type { NamedOpCase } from '../check.ts';

// [name, N, H, W, Cin, K, Cout, stride, pad, bias]
export type ConvCase = [string, number, number, number, number, number, number, number, number, boolean];
export const CONV_SHAPES: ConvCase[] = [
  ['1x1 stride 1 (a plain GEMM)', 2, 5, 4, 8, 1, 12, 1, 0, true],
  ['1x1 stride 2 (ResNet downsample)', 2, 9, 7, 8, 1, 16, 2, 0, false],
  ['3x3 pad 1 stride 1, odd channels 5->17, batch 1', 1, 9, 7, 5, 3, 17, 1, 1, true],
  ['3x3 pad 1 stride 2', 2, 9, 7, 8, 3, 12, 2, 1, false],
  ['7x7 stride 2 pad 3 (ImageNet stem), RGB input', 1, 12, 11, 3, 7, 8, 2, 3, true],
  ['3x3 pad 0, 17->5 channels', 3, 6, 5, 17, 3, 5, 1, 0, false],
  ['3x3 pad 2 stride 3, 3->5 channels', 2, 8, 9, 3, 3, 5, 3, 2, true],
  ['3x3 pad 1, many workgroups (2x16x16, 32->48)', 2, 16, 16, 32, 3, 48, 1, 1, true],
  // narrow layers (fewer column quads than half the lanes: lanes split between rows and columns), over several
  // row tiles with a partial last one: 4 and 8 outputs (1 and 2 quads), and 12 (3 quads, padded to 4 lanes)
  ['3x3 pad 1, narrow 8->4 channels, 429 rows', 3, 11, 13, 8, 3, 4, 1, 1, true],
  ['3x3 pad 1 stride 2, narrow 4->8 channels', 4, 13, 11, 4, 3, 8, 2, 1, false],
  ['3x3 pad 1, narrow 1->8 channels (the grayscale stem)', 3, 12, 10, 1, 3, 8, 1, 1, false],
];

/** One case of CONV_SHAPES, on the variant `tuning` forces (the adapter's own without it). */
export function conv2dCase(name: string, [, N, H, W, Cin, K, Cout, s, p, bias]: ConvCase, tuning?: ConvTuningOverrides): NamedOpCase {
  const shapes = [[N, H, W, Cin], [K, K, Cin, Cout], ...(bias ? [[Cout]] : [])];
  return {
    name: `${name}: x ${JSON.stringify(shapes[0])} w ${JSON.stringify(shapes[1])}`,
    shapes,
    ref: ([x, w, b]) => ref.conv2d(x, w, b ?? null, s, p),
    refGrad: ([x, w, b], dy) => ref.conv2dBackward(x, w, dy, s, p).slice(0, b ? 3 : 2),
    gpu: ([x, w, b]) => conv2d(x, w, b ?? null, { stride: s, padding: p, ...(tuning ? { tuning } : {}) }),
    tol: 1e-4,
  };
}

export const conv2dCases: NamedOpCase[] = CONV_SHAPES.map((c) => conv2dCase(`conv2d ${c[0]}`, c));
