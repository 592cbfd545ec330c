// NonFiniteMonitor: NaN and ±Inf are flagged on the GPU, the first failing check and step are reported, finite
// data stays clean, and checking costs one dispatch and no readback until poll().

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  tensor, full, log, div, mul, exp, mulScalar, sum, tidy, liveTensors, sync, recorderStats, zeros,
} from '../nn/index.ts';
import { NonFiniteMonitor } from '../engine/health.ts';
import { rng } from './helpers/gradcheck.ts';

const t = suite('health');

t('finite data of many sizes stays clean, including huge, tiny, zero and negative values', async () => {
  const before = liveTensors();
  const m = new NonFiniteMonitor();
  const r = rng(5);
  for (const n of [1, 3, 255, 256, 257, 4096, 70_001]) {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = [0, -0, 3.4e38, -3.4e38, 1e-45, -1e-38, r() * 2 - 1][i % 7];
    const x = tensor(data);
    m.check(x, `size ${n}`);
    x.dispose();
  }
  assert.equal(await m.poll(), { ok: true });
  m.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('NaN from log(-1) and Inf from 1/0 are flagged, with kind, check name and step', async () => {
  const m = new NonFiniteMonitor();
  const x = tensor([2, 3, -1, 4]);
  const y = log(x); // NaN at index 2
  m.check(y, 'log');
  let h = await m.poll();
  assert.equal(h, { ok: false, step: 0, what: 'log', kinds: ['NaN'] });
  m.reset();
  assert.equal(await m.poll(), { ok: true }, 'reset clears the flags');

  const one = full([5], 1);
  const den = tensor([1, 2, 0, 4, 5]);
  const q = div(one, den); // +Inf at index 2
  const nq = mulScalar(q, -1); // -Inf
  m.nextStep();
  m.check(one, 'ones');
  m.check(q, 'quotient');
  m.check(nq, 'negated');
  h = await m.poll();
  assert.equal(h, { ok: false, step: 1, what: 'quotient', kinds: ['+Inf', '-Inf'] });
  for (const v of [x, y, one, den, q, nq]) v.dispose();
  m.dispose();
});

t('a single bad element anywhere in a large tensor is found, in every position', async () => {
  const m = new NonFiniteMonitor();
  const n = 300_000; // > 1000 workgroups
  for (const at of [0, 255, 256, 123_457, n - 1]) {
    m.reset();
    const data = new Float32Array(n).fill(1);
    data[at] = at % 2 ? NaN : -Infinity;
    const x = tensor(data);
    m.check(x, `bad at ${at}`);
    x.dispose();
    const h = await m.poll();
    assert.is(h.ok, false, `element ${at}`);
    assert.is(h.what, `bad at ${at}`);
    assert.equal(h.kinds, [at % 2 ? 'NaN' : '-Inf']);
  }
  m.dispose();
});

t('reports the first failure across steps; later failures do not overwrite it', async () => {
  const m = new NonFiniteMonitor({ step: 100 });
  const good = tensor([1, 2, 3]);
  const bad = tensor([1, NaN, 3]);
  const inf = tensor([Infinity]);
  for (let s = 100; s < 110; s++) {
    m.check(good, 'params');
    if (s >= 104) m.check(s === 104 ? inf : bad, s === 104 ? 'loss' : 'grads');
    m.nextStep();
  }
  assert.is(m.step, 110);
  assert.equal(await m.poll(), { ok: false, step: 104, what: 'loss', kinds: ['NaN', '+Inf'] });
  m.reset(0);
  m.check(good, 'params');
  m.nextStep();
  m.check(bad, 'grads');
  assert.equal(await m.poll(), { ok: false, step: 1, what: 'grads', kinds: ['NaN'] });
  for (const v of [good, bad, inf]) v.dispose();
  m.dispose();
});

t('one dispatch per check, no submit and no readback until poll()', async () => {
  const m = new NonFiniteMonitor();
  const x = tensor(new Float32Array(10_000).fill(0.5));
  const step = () =>
    tidy(() => {
      const y = exp(x);
      m.check(y, 'exp');
      m.check(x, 'x');
      m.nextStep();
    });
  step(); // warm-up: pipelines and uniforms
  await sync();
  const s0 = recorderStats();
  for (let k = 0; k < 20; k++) step();
  const s1 = recorderStats();
  assert.is(s1.dispatches - s0.dispatches, 20 * (1 + 2 + 1), 'exp + 2 checks + nextStep per step');
  assert.is(s1.readbacks - s0.readbacks, 0, 'no readback');
  assert.is(s1.submits - s0.submits, 0, 'no submit: checks only record');
  assert.is(s1.uniforms - s0.uniforms, 0, 'the check uniforms repeat every step: nothing new uploaded after warm-up');
  assert.equal(await m.poll(), { ok: true });
  assert.is(recorderStats().readbacks - s1.readbacks, 1, 'poll is one readback');
  x.dispose();
  m.dispose();
});

t('empty tensors are fine; non-f32 tensors and runaway check names are rejected clearly', async () => {
  const m = new NonFiniteMonitor();
  const e = zeros([0, 3]);
  m.check(e, 'empty');
  const i = tensor([1, 2], [2], { dtype: 'i32' });
  assert.throws(() => m.check(i, 'labels'), /NonFiniteMonitor\.check\('labels'\): expected an f32 tensor, got i32 \[2\]/);
  assert.throws(() => new NonFiniteMonitor({ step: -1 }), /step must be an integer/);
  const x = tensor([1]);
  assert.throws(() => {
    for (let k = 0; k < 5000; k++) m.check(x, `loss@${k}`);
  }, /distinct check names/);
  assert.equal(await m.poll(), { ok: true });
  for (const v of [e, i, x]) v.dispose();
  m.dispose();
});

t('a NaN that appears in a loss several ops later is caught at the point it was checked', async () => {
  const m = new NonFiniteMonitor();
  const w = tensor([1, 2, 3]);
  const x = tensor([0, 1, 2]);
  const loss = tidy(() => {
    const l = log(x); // -Inf at 0
    m.check(l, 'log(x)');
    const p = mul(l, tensor([0, 1, 1])); // -Inf * 0 = NaN
    m.check(p, 'product');
    return sum(mul(p, w));
  });
  m.check(loss, 'loss');
  const h = await m.poll();
  assert.equal(h, { ok: false, step: 0, what: 'log(x)', kinds: ['NaN', '-Inf'] });
  assert.ok(Number.isNaN(await loss.item()));
  for (const v of [w, x, loss]) v.dispose();
  m.dispose();
});

t.run();
