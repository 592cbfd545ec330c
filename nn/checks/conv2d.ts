// conv2d op cases (forward, dx, dW and the bias gradient): 1x1, 3x3 and 7x7 kernels, stride 2 and 3, padding,
// channel counts that are not multiples of 4, narrow layers. conv2dCases run the adapter's own variant (what the
// page checks); test/conv2d.test.ts also forces every variant on the same shapes through conv2dCase's tuning.

import { conv2d, ref, type ConvTuningOverrides } from '../../kernels/conv2d.ts';
import type { NamedOpCase } from '../check.ts';
import type { Arr } from '../../engine/ref.ts';

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

// The epilogue (ConvEpilogue): relu(conv(x, w) + b + r), forward and the gradients of x, w, b and r. Texture-sized
// rows (6x8x8) with a narrow output, a stride-2 downsample, channel counts that are not multiples of 4, a wide layer
// (64 outputs: two column quads per lane at 8 lanes) and the grayscale stem (ReLU alone, as a folded stem has it).
export const EPILOGUE_SHAPES: [ConvCase, { add: boolean; relu: boolean }][] = [
  [['3x3 pad 1, 8->8, texture-sized rows', 2, 6, 8, 8, 3, 8, 1, 1, true], { add: true, relu: true }],
  [['1x1 stride 2, 8->16 (downsample)', 2, 9, 7, 8, 1, 16, 2, 0, false], { add: true, relu: true }],
  [['3x3 pad 1, odd 5->7 channels', 2, 5, 6, 5, 3, 7, 1, 1, true], { add: true, relu: false }],
  [['3x3 pad 1 stride 2, 32->64', 2, 8, 7, 32, 3, 64, 2, 1, true], { add: true, relu: true }],
  [['3x3 pad 1, grayscale stem 1->8', 2, 8, 7, 1, 3, 8, 1, 1, true], { add: false, relu: true }],
];

/** conv2d with an epilogue (relu(conv + bias + add)) against the reference, on the variant `tuning` forces. */
export function conv2dEpilogueCase(name: string, [, N, H, W, Cin, K, Cout, s, p, bias]: ConvCase, ep: { add: boolean; relu: boolean }, tuning?: ConvTuningOverrides): NamedOpCase {
  const O = (n: number) => Math.floor((n + 2 * p - K) / s) + 1;
  const shapes = [[N, H, W, Cin], [K, K, Cin, Cout], ...(bias ? [[Cout]] : []), ...(ep.add ? [[N, O(H), O(W), Cout]] : [])];
  const parts = (xs: Arr[]) => ({ b: bias ? xs[2] : null, r: ep.add ? xs[bias ? 3 : 2] : null });
  const out = (xs: Arr[]) => {
    const { b, r } = parts(xs);
    const y = ref.conv2d(xs[0], xs[1], b, s, p);
    return { data: y.data.map((v, i) => { const z = v + (r ? r.data[i] : 0); return ep.relu ? Math.max(z, 0) : z; }), shape: y.shape };
  };
  return {
    name: `${name} + ${[ep.add ? 'add' : '', ep.relu ? 'relu' : ''].filter(Boolean).join(' + ')} epilogue: x ${JSON.stringify(shapes[0])} w ${JSON.stringify(shapes[1])}`,
    shapes,
    ref: out,
    refGrad: (xs, dy) => {
      const z = out(xs);
      const g = { data: dy.data.map((d, i) => (ep.relu && z.data[i] <= 0 ? 0 : d)), shape: dy.shape };
      const [dx, dw, db] = ref.conv2dBackward(xs[0], xs[1], g, s, p);
      return [dx, dw, ...(bias ? [db] : []), ...(ep.add ? [g] : [])];
    },
    gpu: ([x, w, ...rest]) => {
      const b = bias ? rest[0] : null;
      const add = ep.add ? rest[bias ? 1 : 0] : undefined;
      return conv2d(x, w, b, { stride: s, padding: p, epilogue: { add, relu: ep.relu }, ...(tuning ? { tuning } : {}) });
    },
    tol: 1e-4,
  };
}

export const conv2dCases: NamedOpCase[] = [
  ...CONV_SHAPES.map((c) => conv2dCase(`conv2d ${c[0]}`, c)),
  ...EPILOGUE_SHAPES.map(([c, ep]) => conv2dEpilogueCase(`conv2d ${c[0]}`, c, ep)),
];
