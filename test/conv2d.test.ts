import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest } from './helpers/gradcheck.ts';
import { tensor } from '../engine/index.ts';
import { conv2d, setConvLaneMode, ref } from '../kernels/conv2d.ts';

const t = suite('conv2d');

// [name, N, H, W, Cin, K, Cout, stride, pad, bias]
type Case = [string, number, number, number, number, number, number, number, number, boolean];
const cases: Case[] = [
  ['1x1 stride 1 (matmul path)', 2, 5, 4, 8, 1, 12, 1, 0, true],
  ['1x1 stride 2 (ResNet downsample)', 2, 9, 7, 8, 1, 16, 2, 0, false],
  ['3x3 pad 1 stride 1, odd channels 5->17, batch 1', 1, 9, 7, 5, 3, 17, 1, 1, true],
  ['3x3 pad 1 stride 2', 2, 9, 7, 8, 3, 12, 2, 1, false],
  ['7x7 stride 2 pad 3 (ImageNet stem), RGB input', 1, 12, 11, 3, 7, 8, 2, 3, true],
  ['3x3 pad 0, 17->5 channels', 3, 6, 5, 17, 3, 5, 1, 0, false],
  ['3x3 pad 2 stride 3, 3->5 channels', 2, 8, 9, 3, 3, 5, 3, 2, true],
  ['3x3 pad 1, many workgroups (2x16x16, 32->48)', 2, 16, 16, 32, 3, 48, 1, 1, true],
];

for (const [name, N, H, W, Cin, K, Cout, s, p, bias] of cases) {
  const shapes = [[N, H, W, Cin], [K, K, Cin, Cout], ...(bias ? [[Cout]] : [])];
  opTest(`conv2d ${name}: x ${JSON.stringify(shapes[0])} w ${JSON.stringify(shapes[1])}`, {
    shapes,
    ref: ([x, w, b]) => ref.conv2d(x, w, b ?? null, s, p),
    refGrad: ([x, w, b], dy) => {
      const [dx, dw, db] = ref.conv2dBackward(x, w, dy, s, p);
      return b ? [dx, dw, db] : [dx, dw];
    },
    gpu: ([x, w, b]) => conv2d(x, w, b ?? null, { stride: s, padding: p }),
    tol: 1e-4,
  }, t);
}

t.run();
