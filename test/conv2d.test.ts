import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest, checkOp } from './helpers/gradcheck.ts';
import { tensor, variable, backward, tidy, liveTensors, sync } from '../nn/index.ts';
import { conv2d, setConvLaneMode, setConvTiles, ref } from '../kernels/conv2d.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('conv2d');

// [name, N, H, W, Cin, K, Cout, stride, pad, bias]
type Case = [string, number, number, number, number, number, number, number, number, boolean];
const cases: Case[] = [
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

// the kernels for adapters without fixed-width subgroups (browsers), forced here on lavapipe
const portable: Case[] = [
  ['3x3 pad 1 stride 2', 2, 9, 7, 8, 3, 12, 2, 1, true],
  ['3x3 pad 1, 5->17 channels', 1, 6, 5, 5, 3, 17, 1, 1, false],
];
for (const [name, N, H, W, Cin, K, Cout, s, p, bias] of portable) {
  const shapes = [[N, H, W, Cin], [K, K, Cin, Cout], ...(bias ? [[Cout]] : [])];
  t(`conv2d without subgroups, ${name}`, async () => {
    setConvLaneMode('portable');
    try {
      await checkOp({
        shapes,
        ref: ([x, w, b]) => ref.conv2d(x, w, b ?? null, s, p),
        refGrad: ([x, w, b], dy) => ref.conv2dBackward(x, w, dy, s, p).slice(0, b ? 3 : 2),
        gpu: ([x, w, b]) => conv2d(x, w, b ?? null, { stride: s, padding: p }),
        tol: 1e-4,
      });
    } finally {
      setConvLaneMode('auto');
    }
  });
}

// the wide kernels on narrow layers (narrowRows 0), which other adapters and the tuner may still pick
t('conv2d narrow layers with the wide kernels', async () => {
  setConvTiles({ narrowRows: 0 });
  try {
    await checkOp({
      shapes: [[3, 9, 7, 8], [3, 3, 8, 8], [8]],
      ref: ([x, w, b]) => ref.conv2d(x, w, b, 1, 1),
      refGrad: ([x, w, b], dy) => ref.conv2dBackward(x, w, dy, 1, 1),
      gpu: ([x, w, b]) => conv2d(x, w, b, { stride: 1, padding: 1 }),
      tol: 1e-4,
    });
  } finally {
    setConvTiles(null);
  }
});

// other register blocks (the tuner's knobs): 2 column quads per lane; dW with 4 pixels per step, 2 steps unrolled
t('conv2d with other tile shapes', async () => {
  setConvTiles({ RB: 1, CB: 2, RQ: 2, dwCB: 1, U: 2 });
  try {
    await checkOp({
      shapes: [[2, 7, 6, 8], [3, 3, 8, 72], [72]],
      ref: ([x, w, b]) => ref.conv2d(x, w, b, 2, 1),
      refGrad: ([x, w, b], dy) => ref.conv2dBackward(x, w, dy, 2, 1),
      gpu: ([x, w, b]) => conv2d(x, w, b, { stride: 2, padding: 1 }),
      tol: 1e-4,
    });
  } finally {
    setConvTiles(null);
  }
});

t('conv2d of an empty batch', async () => {
  const before = liveTensors();
  const x = variable(new Float32Array(0), [0, 5, 5, 4]);
  const w = variable(new Float32Array(3 * 3 * 4 * 8).fill(1), [3, 3, 4, 8]);
  const b = variable(new Float32Array(8).fill(1), [8]);
  const y = tidy(() => conv2d(x, w, b, { padding: 1 }));
  assert.equal(y.shape, [0, 5, 5, 8]);
  const dy = tensor(new Float32Array(0), [0, 5, 5, 8]);
  backward(y, dy);
  assert.equal(x.grad!.shape, [0, 5, 5, 4]);
  assert.ok((await w.grad!.toArray()).every((v) => v === 0));
  assert.ok((await b.grad!.toArray()).every((v) => v === 0));
  for (const t of [x, w, b, y, dy]) t.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('conv2d errors name the op and the shapes', () => {
  const x = tensor(new Float32Array(2 * 5 * 5 * 3), [2, 5, 5, 3]);
  const w = tensor(new Float32Array(3 * 3 * 1 * 16), [3, 3, 1, 16]);
  const w3 = tensor(new Float32Array(3 * 3 * 3 * 16), [3, 3, 3, 16]);
  const w7 = tensor(new Float32Array(7 * 7 * 3 * 4), [7, 7, 3, 4]);
  const x3 = tensor(new Float32Array(75), [5, 5, 3]);
  const w2 = tensor(new Float32Array(9), [3, 3]);
  const b8 = tensor(new Float32Array(8), [8]);
  const b116 = tensor(new Float32Array(16), [1, 16]);
  const xi = tensor(new Int32Array(150), [2, 5, 5, 3], { dtype: 'i32' });
  throwsWith(() => conv2d(x, w), 'conv2d: input has 3 channels but weight [3, 3, 1, 16] expects 1');
  throwsWith(() => conv2d(x3, w3), 'conv2d', 'input must be 4-D', '[5, 5, 3]');
  throwsWith(() => conv2d(x, w2), 'conv2d', 'weight must be 4-D', '[3, 3]');
  throwsWith(() => conv2d(x, w7), 'conv2d', '[2, 5, 5, 3]', 'too small', '7x7', 'output would be -1x-1');
  throwsWith(() => conv2d(x, w3, null, { stride: 0 }), 'conv2d', 'stride', 'positive integer', '0');
  throwsWith(() => conv2d(x, w3, null, { stride: 1.5 }), 'conv2d', 'stride', '1.5');
  throwsWith(() => conv2d(x, w3, null, { padding: -1 }), 'conv2d', 'padding', '-1');
  throwsWith(() => conv2d(x, w3, b8), 'conv2d', 'bias', '[16]', '[8]');
  throwsWith(() => conv2d(x, w3, b116), 'conv2d', 'bias', '[1, 16]');
  throwsWith(() => conv2d(xi, w3), 'conv2d', 'f32', 'i32');
  // padding makes a 7x7 kernel fit a 5x5 image: 5 + 2 - 7 + 1 = 1
  const y = conv2d(x, w7, null, { padding: 1 });
  assert.equal(y.shape, [2, 1, 1, 4]);
  for (const t of [x, w, w3, w7, x3, w2, b8, b116, xi, y]) t.dispose();
});

t.run();
