import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest, rng } from './helpers/gradcheck.ts';
import { tensor, variable, backward, tidy, liveTensors, sync } from '../nn/index.ts';
import { softmax, softmaxCrossEntropy, argmax, crossEntropyRows, ref } from '../kernels/softmax.ts';
import { throwsWith } from './helpers/errors.ts';
import { softmaxCases } from '../nn/checks/softmax.ts';

const t = suite('softmax');

// the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of softmaxCases) opTest(name, c, t);

t('argmax along any axis, first maximum on ties', async () => {
  const x = tensor([1, 5, 5, 2, 9, 0, 9, 3, -1, -1, -1, -1], [3, 4]);
  const rows = argmax(x);
  assert.equal(rows.dtype, 'i32');
  assert.equal(rows.shape, [3]);
  assert.equal(Array.from(await rows.toArray()), [1, 0, 0]);
  const cols = argmax(x, 0);
  assert.equal(Array.from(await cols.toArray()), [1, 0, 1, 1]);
  const r = rng(5);
  const data = Float64Array.from({ length: 2 * 5 * 3 }, () => Math.fround(r()));
  const x3 = tensor(data, [2, 5, 3]);
  const mid = argmax(x3, 1);
  assert.equal(Array.from(await mid.toArray()), Array.from(ref.argmax({ data, shape: [2, 5, 3] }, 1).data));
  for (const t of [x, rows, cols, x3, mid]) t.dispose();
});

t('a label out of range makes the loss NaN instead of reading another row', async () => {
  const before = liveTensors();
  const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  for (const bad of [3, -1]) {
    const labels = tensor([0, bad], [2], { dtype: 'i32' });
    const loss = softmaxCrossEntropy(x, labels);
    assert.ok(Number.isNaN(await loss.item()), `label ${bad}`);
    loss.dispose();
    labels.dispose();
  }
  x.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('softmaxCrossEntropy is the mean of -log softmax at the label and trains the logits', async () => {
  const x = variable([0, 0, 0, 2, 0, 0], [2, 3]);
  const labels = tensor([1, 0], [2], { dtype: 'i32' });
  const loss = tidy(() => softmaxCrossEntropy(x, labels));
  const want = (Math.log(3) + (Math.log(Math.exp(2) + 2) - 2)) / 2;
  assert.ok(Math.abs((await loss.item()) - want) < 1e-6);
  backward(loss);
  const g = await x.grad!.toArray();
  const e = Math.exp(2) + 2;
  const wantG = [1 / 3, 1 / 3 - 1, 1 / 3, Math.exp(2) / e - 1, 1 / e, 1 / e].map((v) => v / 2);
  wantG.forEach((v, i) => assert.ok(Math.abs(g[i] - v) < 1e-6, `grad ${i}: ${g[i]} vs ${v}`));
  for (const t of [x, labels, loss]) t.dispose();
});

// the probe's fused pass: classes along a middle axis (class-major blocks [S, C, n]) with a bias, padding rows
// (label -1), logits far from 0; and along the last axis without a bias
for (const [shape, axis, withBias] of [[[3, 10, 37], 1, true], [[70, 4], -1, false]] as [number[], number, boolean][]) {
  t(`crossEntropyRows ${JSON.stringify(shape)} axis ${axis}${withBias ? ' with a bias' : ''}: loss and grad match float64`, async () => {
    const before = liveTensors();
    const r = rng(11);
    const a = axis < 0 ? axis + shape.length : axis;
    const K = shape[a];
    const data = Float64Array.from({ length: shape.reduce((p, d) => p * d) }, () => Math.fround(20 * (r() - 0.5)));
    const rows = data.length / K;
    const labels = Int32Array.from({ length: rows }, (_, i) => (i % 7 === 3 ? -1 : Math.floor(r() * K)));
    const bias = withBias ? Float64Array.from({ length: K }, () => Math.fround(r() - 0.5)) : null;
    const x = tensor(data, shape);
    const lt = tensor(labels, shape.filter((_, i) => i !== a), { dtype: 'i32' });
    const bt = bias ? tensor(bias, [K]) : undefined;
    const got = crossEntropyRows(x, lt, { axis, bias: bt });
    const want = ref.crossEntropyRows({ data, shape }, labels, axis, bias);
    assert.equal(got.loss.shape, want.loss.shape);
    const [gl, gg] = [await got.loss.toArray(), await got.grad.toArray()];
    want.loss.data.forEach((v, i) => assert.ok(Math.abs(gl[i] - v) <= 1e-5 * Math.max(1, Math.abs(v)), `loss ${i}: ${gl[i]} vs ${v}`));
    want.grad.data.forEach((v, i) => assert.ok(Math.abs(gg[i] - v) <= 1e-5, `grad ${i}: ${gg[i]} vs ${v}`));
    assert.ok(labels.some((l) => l === -1) && want.loss.data.some((v) => v > 1), 'the case has padding rows and real losses');
    for (const tt of [x, lt, bt, got.loss, got.grad]) tt?.dispose();
    await sync();
    assert.is(liveTensors(), before);
  });
}

t('crossEntropyRows: a label outside [0, K) other than -1 makes its row NaN; errors name the op and the shapes', async () => {
  const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const labels = tensor([0, 3], [2], { dtype: 'i32' });
  const { loss, grad } = crossEntropyRows(x, labels);
  const [l, g] = [await loss.toArray(), await grad.toArray()];
  assert.ok(Number.isFinite(l[0]) && Number.isNaN(l[1]) && Number.isNaN(g[3]) && Number.isFinite(g[0]));
  const l3 = tensor([0, 1, 2], [3], { dtype: 'i32' });
  throwsWith(() => crossEntropyRows(x, l3), 'crossEntropyRows', 'labels', '[2]', '[3]');
  const b2 = tensor([0, 0], [2]);
  throwsWith(() => crossEntropyRows(x, labels, { bias: b2 }), 'crossEntropyRows', 'bias', '[3]', '[2]');
  throwsWith(() => crossEntropyRows(x, labels, { axis: 2 }), 'crossEntropyRows');
  for (const tt of [x, labels, loss, grad, l3, b2]) tt.dispose();
});

t('softmax errors name the op and the shapes', () => {
  const x = tensor(new Float32Array(6), [2, 3]);
  const x3 = tensor(new Float32Array(6), [1, 2, 3]);
  const lf = tensor([0, 1], [2]);
  const l3 = tensor([0, 1, 2], [3], { dtype: 'i32' });
  const xi = tensor([1, 2], [2], { dtype: 'i32' });
  throwsWith(() => softmaxCrossEntropy(x, lf), 'softmaxCrossEntropy', 'i32', 'f32', '[2]');
  throwsWith(() => softmaxCrossEntropy(x, l3), 'softmaxCrossEntropy', 'labels', '[2]', '[3]');
  throwsWith(() => softmaxCrossEntropy(x3, l3), 'softmaxCrossEntropy', '2-D', '[1, 2, 3]');
  throwsWith(() => softmax(xi), 'softmax', 'f32', 'i32');
  throwsWith(() => argmax(x, 2), 'argmax', 'axis 2', '[2, 3]');
  for (const t of [x, x3, lf, l3, xi]) t.dispose();
});

t.run();
