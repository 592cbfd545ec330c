import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest, checkOp } from './helpers/gradcheck.ts';
import { tensor, variable, backward, tidy, liveTensors, sync } from '../nn/index.ts';
import { conv2d, setConvTiles, ref } from '../kernels/conv2d.ts';
import { conv2dCases } from '../nn/checks/conv2d.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('conv2d');

// the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of conv2dCases) opTest(name, c, t);

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
