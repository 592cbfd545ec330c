import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest } from './helpers/gradcheck.ts';
import { tensor, variable, backward, tidy, liveTensors, sync } from '../nn/index.ts';
import { maxPool2d, globalAvgPool } from '../kernels/pool.ts';
import { throwsWith } from './helpers/errors.ts';
import { poolCases } from '../nn/checks/pool.ts';

const t = suite('pool');

// the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of poolCases) opTest(name, c, t);

t('maxPool2d ties: the gradient goes to the first maximum in window order, once', async () => {
  const before = liveTensors();
  // one image, 4x4, one channel, all equal: every 2x2 window (stride 2) sends its gradient to its top-left pixel
  const x = variable(new Float32Array(16).fill(1), [1, 4, 4, 1]);
  const y = tidy(() => maxPool2d(x, { kernel: 2, stride: 2, padding: 0 }));
  assert.equal(Array.from(await y.toArray()), [1, 1, 1, 1]);
  const dy = tensor([1, 2, 3, 4], [1, 2, 2, 1]);
  backward(y, dy);
  assert.equal(Array.from(await x.grad!.toArray()), [1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0]);
  // overlapping windows (kernel 3, stride 1, padding 1) over a constant image all pick their first pixel
  const z = variable(new Float32Array(9).fill(-2), [1, 3, 3, 1]);
  const w = tidy(() => maxPool2d(z, { kernel: 3, stride: 1, padding: 1 }));
  const ones = tensor(new Float32Array(9).fill(1), [1, 3, 3, 1]);
  backward(w, ones);
  // window (oh, ow) starts at (oh - 1, ow - 1) clipped to the image: (0,0) gets 4 windows, (0,1) 2, (1,0) 2, (1,1) 1
  assert.equal(Array.from(await z.grad!.toArray()), [4, 2, 0, 2, 1, 0, 0, 0, 0]);
  for (const t of [x, y, dy, z, w, ones]) t.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('pool errors name the op and the shapes', () => {
  const x3 = tensor(new Float32Array(12), [2, 2, 3]);
  const x = tensor(new Float32Array(2 * 2 * 2 * 3), [2, 2, 2, 3]);
  throwsWith(() => maxPool2d(x3), 'maxPool2d', '4-D', '[2, 2, 3]');
  throwsWith(() => maxPool2d(x, { kernel: 3, padding: 2 }), 'maxPool2d', 'padding', 'kernel / 2', '2');
  throwsWith(() => maxPool2d(x, { kernel: 5, padding: 0 }), 'maxPool2d', '[2, 2, 2, 3]', 'too small');
  throwsWith(() => maxPool2d(x, { stride: 0 }), 'maxPool2d', 'stride');
  throwsWith(() => globalAvgPool(x3), 'globalAvgPool', '4-D', '[2, 2, 3]');
  x3.dispose();
  x.dispose();
});

t.run();
