// EMA check: target = tau·target + (1 − tau)·online over an arena in one dispatch, several steps (tau 0 and near
// 1 included) against float64, with an online arena that has extra (predictor) parameters after the shared ones
// (see nn/checks/index.ts).

import { recorderStats } from '../index.ts';
import { Arena, type SegmentSpec } from '../../engine/arena.ts';
import { emaUpdate } from '../ema.ts';
import { ref } from '../../kernels/optim.ts';
import { rng, ensure, ensureEqual, leakFree, type Check } from '../check.ts';

/** Arena layouts the check and the EMA error tests share: the target's segments, and the online's extra one. */
export const SPECS: SegmentSpec[] = [
  { name: 'enc.weight', shape: [1], kind: 'weight' },
  { name: 'enc.bias', shape: [3], kind: 'bias' },
  { name: 'bn.weight', shape: [257], kind: 'norm' },
  { name: 'proj.weight', shape: [1000], kind: 'weight' },
];
export const PREDICTOR: SegmentSpec = { name: 'pred.weight', shape: [33, 7], kind: 'weight' };

const random = (n: number, seed: number) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
};

export const emaChecks: Check[] = [
  {
    name: 'emaUpdate: target = tau·target + (1 − tau)·online, one dispatch, several steps against float64',
    run: () => leakFree(async () => {
      const target = new Arena(SPECS);
      const online = new Arena(SPECS);
      try {
        const tw = random(target.numel, 1);
        target.write(tw);
        const want = Float64Array.from(tw);
        const taus = [0.996, 0.5, 0.9995, 0];
        for (let k = 0; k < taus.length; k++) {
          const ow = random(online.numel, 10 + k);
          online.write(ow);
          const d0 = recorderStats().dispatches;
          emaUpdate(target, online, taus[k]);
          const n = recorderStats().dispatches - d0;
          ensure(n === 1, `tau ${taus[k]}: one dispatch, got ${n}`);
          ref.ema(want, Float64Array.from(ow), taus[k]);
          const got = await target.read();
          let err = 0;
          for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
          ensure(err < 2e-7, `tau ${taus[k]}: max error ${err}`);
        }
        // tau = 0 made the target a copy; tau = 1 leaves it unchanged
        const before = await target.read();
        online.write(random(online.numel, 99));
        emaUpdate(target, online, 1);
        ensureEqual(await target.read(), before, 'tau 1 leaves the target unchanged');
      } finally {
        target.dispose();
        online.dispose();
      }
    }),
  },
  {
    name: 'emaUpdate with an online network that has extra (predictor) parameters after the shared ones',
    run: () => leakFree(async () => {
      const target = new Arena(SPECS);
      const online = new Arena([...SPECS, PREDICTOR]);
      try {
        const ow = random(online.numel, 3);
        online.write(ow);
        emaUpdate(target, online, 0);
        ensureEqual(await target.read(), ow.subarray(0, target.numel), 'tau 0 copies the shared parameters');
        ensureEqual(await online.read(), ow, 'online untouched');
      } finally {
        target.dispose();
        online.dispose();
      }
    }),
  },
];
