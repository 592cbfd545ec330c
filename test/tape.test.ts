import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  tensor, variable, add, mul, sum, mean, relu, matmul, exp, backward, noGrad, detach, tidy, liveTensors, sync,
  tapeLength, clearTape, mulScalar,
} from '../nn/index.ts';
import { assertClose } from './helpers/gradcheck.ts';

const t = suite('autograd tape');

t('gradients accumulate across two backward calls', async () => {
  const x = variable([1, 2, 3]);
  for (let i = 0; i < 2; i++) tidy(() => backward(sum(mul(x, x))));
  assertClose(await x.grad!.toArray(), [4, 8, 12], 1e-6, 'd/dx 2·sum(x²)');
  x.dispose();
});

t('a tensor used twice gets both contributions', async () => {
  const x = variable([0.5, -2]);
  tidy(() => backward(sum(add(mul(x, x), mulScalar(x, 3)))));
  assertClose(await x.grad!.toArray(), [4, -1], 1e-6, '2x + 3');
  x.dispose();
});

t('noGrad records nothing and output does not require grad', async () => {
  const x = variable([1, 2]);
  const y = noGrad(() => mul(x, x));
  assert.is(y.requiresGrad, false);
  assert.is(tapeLength(), 0);
  assert.throws(() => tidy(() => backward(sum(y))), /does not require grad/);
  y.dispose();
  x.dispose();
});

t('detach stops the gradient', async () => {
  const x = variable([1, 2, 3]);
  tidy(() => backward(sum(mul(detach(x), x))));
  assertClose(await x.grad!.toArray(), [1, 2, 3], 1e-6, 'only the non-detached factor');
  x.dispose();
});

t('constants get no gradient', async () => {
  const x = variable([1, 2]);
  const c = tensor([3, 4]);
  tidy(() => backward(sum(mul(x, c))));
  assert.is(c.grad, null);
  assertClose(await x.grad!.toArray(), [3, 4], 1e-6, 'x grad');
  x.dispose();
  c.dispose();
});

t('backward through a non-scalar needs a gradient', () => {
  const x = variable([1, 2, 3]);
  const y = mul(x, x);
  assert.throws(() => backward(y), (e: Error) => /non-scalar/.test(e.message) && /\[3\]/.test(e.message));
  clearTape();
  y.dispose();
  x.dispose();
});

t('saved tensors outlive dispose() of the user handle and are released after backward', async () => {
  const before = liveTensors();
  const x = variable([1, 2, 3]);
  const y = exp(x); // saves its output
  const s = sum(y);
  y.dispose(); // the tape still needs exp(x)
  backward(s);
  assertClose(await x.grad!.toArray(), [Math.E, Math.E ** 2, Math.E ** 3], 1e-6, 'exp grad');
  s.dispose();
  x.dispose();
  await sync();
  assert.is(tapeLength(), 0);
  assert.is(liveTensors(), before);
});

t('tidy disposes intermediates and keeps the result', async () => {
  const before = liveTensors();
  const a = tensor([1, 2, 3, 4], [2, 2]);
  const r = tidy(() => mean(relu(matmul(a, a))));
  assert.is(liveTensors(), before + 2);
  assert.is(await r.item(), (7 + 10 + 15 + 22) / 4);
  r.dispose();
  a.dispose();
  assert.is(liveTensors(), before);
});

t('100 forward/backward steps leave the live-buffer count unchanged', async () => {
  const w = variable(Array.from({ length: 12 }, (_, i) => (i - 6) / 10), [4, 3]);
  const x = tensor(Array.from({ length: 20 }, (_, i) => Math.sin(i)), [5, 4]);
  const step = () =>
    tidy(() => {
      backward(mean(relu(matmul(x, w))));
      const g = w.grad!;
      w.grad = null;
      g.dispose();
    });
  step();
  await sync();
  const base = liveTensors();
  for (let i = 0; i < 100; i++) step();
  await sync();
  assert.is(liveTensors(), base);
  assert.is(tapeLength(), 0);
  w.dispose();
  x.dispose();
});

t.run();
