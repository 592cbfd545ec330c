// concatRows / sliceRows: forward and every gradient against float64, any trailing shape, views of the leading
// axis at offsets that are not 256-byte aligned, and the errors.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest } from './helpers/gradcheck.ts';
import { tensor, liveTensors, sync, concatRows, sliceRows } from '../nn/index.ts';
import { throwsWith } from './helpers/errors.ts';
import type { Arr } from '../engine/ref.ts';

const t = suite('rows');

const refConcat = (xs: Arr[]): Arr => {
  const data = new Float64Array(xs.reduce((n, x) => n + x.data.length, 0));
  let at = 0;
  for (const x of xs) (data.set(x.data, at), (at += x.data.length));
  return { data, shape: [xs.reduce((n, x) => n + x.shape[0], 0), ...xs[0].shape.slice(1)] };
};
const rowSize = (a: Arr) => a.data.length / a.shape[0];

for (const shapes of [[[3, 5], [2, 5]], [[1, 2, 3, 3], [4, 2, 3, 3], [2, 2, 3, 3]], [[7], [1]]]) {
  opTest(`concatRows ${JSON.stringify(shapes)}`, {
    shapes,
    ref: refConcat,
    refGrad: (xs, dy) => {
      let at = 0;
      return xs.map((x) => {
        const g = { data: dy.data.slice(at, at + x.data.length), shape: [...x.shape] };
        at += x.data.length;
        return g;
      });
    },
    gpu: (ts) => concatRows(ts),
    tol: 1e-6,
  }, t);
}

for (const [shape, start, count] of [[[7, 3], 2, 4], [[5, 2, 2, 3], 4, 1], [[6, 33], 0, 6]] as [number[], number, number][]) {
  opTest(`sliceRows ${JSON.stringify(shape)} from ${start}, ${count} rows`, {
    shapes: [shape],
    ref: ([x]) => ({ data: x.data.slice(start * rowSize(x), (start + count) * rowSize(x)), shape: [count, ...shape.slice(1)] }),
    refGrad: ([x], dy) => {
      const g = new Float64Array(x.data.length);
      g.set(dy.data, start * rowSize(x));
      return [{ data: g, shape: [...shape] }];
    },
    gpu: ([x]) => sliceRows(x, start, count),
    tol: 1e-6,
  }, t);
}

t('concatRows keeps integer dtypes; errors name the op and the shapes', async () => {
  const before = liveTensors();
  const a = tensor(Int32Array.from([1, -2]), [1, 2]);
  const b = tensor(Int32Array.from([3, 4, 5, 6]), [2, 2]);
  const c = concatRows([a, b]);
  assert.is(c.dtype, 'i32');
  assert.equal(Array.from(await c.toArray()), [1, -2, 3, 4, 5, 6]);
  const f = tensor(new Float32Array(6), [2, 3]);
  throwsWith(() => concatRows([]), 'concatRows', 'at least one');
  throwsWith(() => concatRows([a, f]), 'concatRows', 'trailing shape', '[1, 2]', '[2, 3]');
  throwsWith(() => sliceRows(f, 1, 2), 'sliceRows', 'start 1', 'count 2', '[2, 3]');
  throwsWith(() => sliceRows(f, -1, 1), 'sliceRows', '[2, 3]');
  for (const x of [a, b, c, f]) x.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t.run();
