import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Arena } from '../engine/arena.ts';
import { emaUpdate } from '../nn/ema.ts';
import { warmupCosine, emaTau } from '../nn/schedule.ts';
import { checkTests } from './helpers/gradcheck.ts';
import { emaChecks, SPECS, PREDICTOR } from '../nn/checks/ema.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('ema and schedules');

// the float64 checks live in nn/checks/ so that the browser page runs the same checks
checkTests(emaChecks, t);

t('emaUpdate errors: arenas that do not match, tau out of range, disposed arenas', () => {
  const target = new Arena(SPECS);
  const online = new Arena([...SPECS, PREDICTOR]);
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
