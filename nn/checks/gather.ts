// Row gather checks: f32 and i32 rows by a window of an index, out-of-range indices giving zero rows
// (see nn/checks/index.ts).

import { tensor, type Tensor } from '../index.ts';
import { gatherRows, ref } from '../../kernels/gather.ts';
import { rng, ensure, ensureEqual, assertClose, leakFree, type Check } from '../check.ts';

export const gatherChecks: Check[] = [
  {
    name: 'gatherRows: f32 and i32 rows by a window of an index, out-of-range indices give zero rows',
    run: () => leakFree(async () => {
      const r = rng(5);
      const shape = [13, 3, 2];
      const x = Float32Array.from({ length: 13 * 6 }, () => r() * 2 - 1);
      const idx = Int32Array.of(4, 0, 12, 12, 7, -1, 13, 2);
      const xt = tensor(x, shape);
      const it = tensor(idx, [idx.length], { dtype: 'i32' });
      const yi = tensor(Int32Array.from({ length: 13 }, (_, i) => 100 + i), [13], { dtype: 'i32' });
      const made: Tensor[] = [xt, it, yi];
      try {
        const g = gatherRows(xt, it, 1, 6);
        made.push(g);
        ensureEqual(g.shape, [6, 3, 2], 'gatherRows f32 shape');
        assertClose(await g.toArray(), ref.gatherRows(x, shape, idx, 1, 6), 0, 'gatherRows f32');
        const gi = gatherRows(yi, it);
        made.push(gi);
        ensure(gi.dtype === 'i32', `gatherRows of i32 gives ${gi.dtype}`);
        ensureEqual(await gi.toArray(), [104, 100, 112, 112, 107, 0, 0, 102], 'gatherRows i32');
      } finally {
        for (const a of made) a.dispose();
      }
    }),
  },
];
