import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, tidy, backward, liveTensors, sync, neg, mulScalar, type Tensor } from '../nn/index.ts';
import { cosineLoss, normalizedStd, ref } from '../kernels/cosine.ts';
import { opTest, rng, randArr, assertClose } from './helpers/gradcheck.ts';
import type { Arr } from '../engine/ref.ts';
import { throwsWith } from './helpers/errors.ts';
import { cosineCases } from '../nn/checks/cosine.ts';

const t = suite('cosine');

const up = (a: Arr, requiresGrad = false) => tensor(Float32Array.from(a.data), a.shape, { requiresGrad });

// the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of cosineCases) opTest(name, c, t);

t('z gets no gradient even when it requires grad', async () => {
  const before = liveTensors();
  const r = rng(2);
  const pa = randArr([6, 12], r);
  const za = randArr([6, 12], r);
  const p = up(pa, true);
  const z = up(za, true);
  const loss = tidy(() => cosineLoss(p, z));
  backward(loss);
  assert.is(z.grad, null, 'z is a constant of the loss');
  assertClose(await p.grad!.toArray(), ref.cosineLossBackward(pa, za, { data: Float64Array.of(1), shape: [] })[0].data, 1e-5, 'dp');
  // a z that alone requires grad records nothing
  const p2 = up(pa);
  const l2 = tidy(() => cosineLoss(p2, z));
  assert.is(l2.requiresGrad, false);
  assert.is(z.grad, null);
  for (const v of [loss, l2, p, p2, z]) v.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('loss is 0 for p = z and 4 for p = -z', async () => {
  const before = liveTensors();
  const r = rng(3);
  for (const shape of [[1, 3], [7, 256], [33, 129]]) {
    const z = up(randArr(shape, r));
    const p = up(randArr(shape, r), true);
    const scaled = tidy(() => mulScalar(z, 3.5)); // the loss ignores the scale of either argument
    const same = tidy(() => cosineLoss(scaled, z));
    const opposite = tidy(() => cosineLoss(tidy(() => neg(z)), z));
    assert.ok(Math.abs(await same.item()) < 1e-5, `p = 3.5 z gives ${await same.item()}`);
    assert.ok(Math.abs((await opposite.item()) - 4) < 1e-5, `p = -z gives ${await opposite.item()}`);
    for (const v of [z, p, scaled, same, opposite]) v.dispose();
  }
  await sync();
  assert.is(liveTensors(), before);
});

t('tiny p: the 1e-12 clamp in forward and backward', async () => {
  // |p|² < 1e-12, so n(p) = p / 1e-6 (not unit length) and the gradient has no projection term
  const before = liveTensors();
  const r = rng(4);
  const pa = randArr([4, 5], r, -1e-8, 1e-8);
  const za = randArr([4, 5], r);
  const p = up(pa, true);
  const z = up(za);
  const loss = tidy(() => cosineLoss(p, z));
  assertClose([await loss.item()], ref.cosineLoss(pa, za).data, 1e-5, 'loss');
  backward(loss);
  assertClose(await p.grad!.toArray(), ref.cosineLossBackward(pa, za, { data: Float64Array.of(1), shape: [] })[0].data, 1e-5, 'dp');
  for (const v of [loss, p, z]) v.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('normalizedStd matches the reference; 0 when collapsed, about 1/sqrt(D) when spread', async () => {
  const before = liveTensors();
  const r = rng(5);
  for (const shape of [[2, 3], [17, 256], [64, 33]]) {
    const za = randArr(shape, r);
    const z = up(za, true);
    const s = normalizedStd(z);
    assert.equal(s.shape, []);
    assert.is(s.requiresGrad, false, 'a monitor, not on the tape');
    assertClose([await s.item()], ref.normalizedStd(za).data, 1e-5, `normalizedStd ${JSON.stringify(shape)}`);
    s.dispose();
    z.dispose();
  }
  const row = randArr([1, 64], r);
  const collapsed = up({ data: new Float64Array(32 * 64).map((_, i) => row.data[i % 64]), shape: [32, 64] });
  const sc = normalizedStd(collapsed);
  assert.ok(Math.abs(await sc.item()) < 1e-6, `collapsed: ${await sc.item()}`);
  // Gaussian rows (Box-Muller) point in uniformly random directions: std per channel ≈ 1/sqrt(D)
  const g = new Float32Array(512 * 64).map(() => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
  const spread = tensor(g, [512, 64]);
  const ss = normalizedStd(spread);
  assert.ok(Math.abs((await ss.item()) - 1 / 8) < 0.005, `spread: ${await ss.item()} vs 0.125`);
  for (const v of [collapsed, sc, spread, ss]) v.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('errors name the op and the shapes', async () => {
  const before = liveTensors();
  const made: Tensor[] = [];
  const z = (shape: number[]) => {
    const v = tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    made.push(v);
    return v;
  };
  throwsWith(() => cosineLoss(z([4, 8]), z([4, 7])), 'cosineLoss', '[4, 8]', '[4, 7]');
  throwsWith(() => cosineLoss(z([4, 8]), z([3, 8])), 'cosineLoss', '[4, 8]', '[3, 8]');
  throwsWith(() => cosineLoss(z([8]), z([8])), 'cosineLoss', '[B, D]', '[8]');
  throwsWith(() => cosineLoss(z([0, 8]), z([0, 8])), 'cosineLoss', 'empty', '[0, 8]');
  const zi = tensor([1, 2], [1, 2], { dtype: 'i32' });
  made.push(zi);
  throwsWith(() => cosineLoss(z([1, 2]), zi), 'cosineLoss', 'f32', 'i32');
  throwsWith(() => normalizedStd(z([1, 8])), 'normalizedStd', 'B >= 2', '[1, 8]');
  throwsWith(() => normalizedStd(z([2, 2, 2])), 'normalizedStd', '[2, 2, 2]');
  made.forEach((v) => v.dispose());
  await sync();
  assert.is(liveTensors(), before);
});

t.run();
