import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { recorderStats } from '../nn/index.ts';
import { Arena, type SegmentSpec } from '../engine/arena.ts';
import { emaUpdate } from '../nn/ema.ts';
import { warmupCosine, emaTau } from '../nn/schedule.ts';
import { ref } from '../kernels/optim.ts';
import { rng } from './helpers/gradcheck.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('ema and schedules');

const SPECS: SegmentSpec[] = [
  { name: 'enc.weight', shape: [1], kind: 'weight' },
  { name: 'enc.bias', shape: [3], kind: 'bias' },
  { name: 'bn.weight', shape: [257], kind: 'norm' },
  { name: 'proj.weight', shape: [1000], kind: 'weight' },
];
const PREDICTOR: SegmentSpec = { name: 'pred.weight', shape: [33, 7], kind: 'weight' };

const random = (n: number, seed: number) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
};

t('emaUpdate: target = tau·target + (1 − tau)·online, one dispatch, several steps against float64', async () => {
  const target = new Arena(SPECS);
  const online = new Arena(SPECS);
  const tw = random(target.numel, 1);
  target.write(tw);
  const want = Float64Array.from(tw);
  const taus = [0.996, 0.5, 0.9995, 0];
  for (let k = 0; k < taus.length; k++) {
    const ow = random(online.numel, 10 + k);
    online.write(ow);
    const d0 = recorderStats().dispatches;
    emaUpdate(target, online, taus[k]);
    assert.is(recorderStats().dispatches - d0, 1);
    ref.ema(want, Float64Array.from(ow), taus[k]);
    const got = await target.read();
    let err = 0;
    for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
    assert.ok(err < 2e-7, `tau ${taus[k]}: max error ${err}`);
  }
  // tau = 0 made the target a copy; tau = 1 leaves it unchanged
  const before = await target.read();
  online.write(random(online.numel, 99));
  emaUpdate(target, online, 1);
  assert.equal(await target.read(), before);
  target.dispose();
  online.dispose();
});

t('emaUpdate with an online network that has extra (predictor) parameters after the shared ones', async () => {
  const target = new Arena(SPECS);
  const online = new Arena([...SPECS, PREDICTOR]);
  const ow = random(online.numel, 3);
  online.write(ow);
  emaUpdate(target, online, 0);
  assert.equal(await target.read(), ow.subarray(0, target.numel));
  assert.equal(await online.read(), ow, 'online untouched');
  throwsWith(() => emaUpdate(online, target, 0.9), 'emaUpdate', 'does not start with', '5 segments vs only 4');
  const renamed = new Arena([{ ...SPECS[0], name: 'other' }, ...SPECS.slice(1)]);
  throwsWith(() => emaUpdate(target, renamed, 0.9), 'emaUpdate', "'enc.weight'", "'other'");
  throwsWith(() => emaUpdate(target, online, 1.5), 'emaUpdate', 'tau', '1.5');
  throwsWith(() => emaUpdate(target, target, 0.9), 'emaUpdate', 'same arena');
  renamed.dispose();
  online.dispose();
  throwsWith(() => emaUpdate(target, online, 0.9), 'disposed');
  target.dispose();
});

t('emaTau: tau(0) = base, tau(K) = 1, monotone, clipped after K', () => {
  const K = 1000;
  for (const base of [0.99, 0.996, 0.9995]) {
    assert.ok(Math.abs(emaTau(0, K, base) - base) < 1e-15);
    assert.is(emaTau(K, K, base), 1);
    assert.is(emaTau(K + 50, K, base), 1);
    assert.ok(Math.abs(emaTau(K / 2, K, base) - (1 - (1 - base) / 2)) < 1e-15, 'halfway');
    for (let k = 1; k <= K; k++) assert.ok(emaTau(k, K, base) >= emaTau(k - 1, K, base), `monotone at ${k}`);
  }
  throwsWith(() => emaTau(-1, K, 0.99), 'emaTau', 'step');
  throwsWith(() => emaTau(1, 0, 0.99), 'emaTau', 'totalSteps');
  throwsWith(() => emaTau(1, K, 1.2), 'emaTau', 'tauBase');
});

t('warmupCosine: lr(0) = 0, lr(W) = base·B/256, lr(K) = 0, linear warm-up then cosine', () => {
  const o = { baseLr: 0.2, batchSize: 512, warmupSteps: 100, totalSteps: 1100 };
  const peak = (0.2 * 512) / 256;
  assert.is(warmupCosine(0, o), 0);
  assert.ok(Math.abs(warmupCosine(100, o) - peak) < 1e-15);
  assert.ok(Math.abs(warmupCosine(50, o) - peak / 2) < 1e-15, 'halfway through warm-up');
  assert.ok(Math.abs(warmupCosine(600, o) - peak / 2) < 1e-15, 'halfway through the cosine');
  assert.ok(Math.abs(warmupCosine(1100, o)) < 1e-15);
  assert.ok(Math.abs(warmupCosine(5000, o)) < 1e-15, 'stays 0 after K');
  for (let s = 1; s <= 100; s++) assert.ok(warmupCosine(s, o) > warmupCosine(s - 1, o), `rising at ${s}`);
  for (let s = 101; s <= 1100; s++) assert.ok(warmupCosine(s, o) < warmupCosine(s - 1, o), `falling at ${s}`);
  assert.ok(Math.abs(warmupCosine(0, { ...o, warmupSteps: 0 }) - peak) < 1e-15, 'no warm-up starts at the peak');
  throwsWith(() => warmupCosine(0, { ...o, totalSteps: 100 }), 'warmupCosine', 'warmupSteps < totalSteps');
  throwsWith(() => warmupCosine(-1, o), 'warmupCosine', 'step');
});

t.run();
