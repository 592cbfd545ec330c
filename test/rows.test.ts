// concatRows / sliceRows / swapHalves: forward and every gradient against float64, any trailing shape, views of
// the leading axis at offsets that are not 256-byte aligned, and the errors.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest } from './helpers/gradcheck.ts';
import { tensor, liveTensors, sync, concatRows, sliceRows, swapHalves } from '../nn/index.ts';
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

// plain JS: row r of the result is row (r + N/2) mod N of x
const refSwap = (x: Arr): Arr => {
  const N = x.shape[0];
  const w = rowSize(x);
  const data = new Float64Array(x.data.length);
  for (let r = 0; r < N; r++) for (let k = 0; k < w; k++) data[r * w + k] = x.data[((r + N / 2) % N) * w + k];
  return { data, shape: [...x.shape] };
};

// half sizes that are and are not multiples of 4 (the vec4 and the scalar kernel), odd inner sizes, one row per
// half, more than one workgroup of words
for (const shape of [[2, 1], [2, 3], [4, 5], [6, 7, 3], [2, 2, 3, 3], [10, 4], [8, 33], [64, 129], [2, 1031]]) {
  opTest(`swapHalves ${JSON.stringify(shape)}`, {
    shapes: [shape],
    ref: ([x]) => refSwap(x),
    refGrad: (_xs, dy) => [refSwap(dy)], // its own inverse: the gradient is swapped back
    gpu: ([x]) => swapHalves(x),
    tol: 1e-6,
  }, t);
}

t('swapHalves copies the bits of every dtype, leaves empty tensors empty, and names the op and the shape in its errors', async () => {
  const before = liveTensors();
  const a = tensor(Int32Array.from([1, -2, 3, 4, -5, 6]), [2, 3]);
  const b = swapHalves(a);
  assert.is(b.dtype, 'i32');
  assert.equal(Array.from(await b.toArray()), [4, -5, 6, 1, -2, 3]);
  const u = tensor(Uint32Array.from([0xffffffff, 0x7fc00001, 7, 8]), [4]);
  const v = swapHalves(u);
  assert.equal(Array.from(await v.toArray()), [7, 8, 0xffffffff, 0x7fc00001]);
  const e = tensor(new Float32Array(0), [0, 3]);
  const f = swapHalves(e);
  assert.equal(f.shape, [0, 3]);
  const odd = tensor(new Float32Array(15), [3, 5]);
  throwsWith(() => swapHalves(odd), 'swapHalves', 'even number of rows', '[3, 5]');
  const scalar = tensor([1], []);
  throwsWith(() => swapHalves(scalar), 'swapHalves', '[]');
  for (const x of [a, b, u, v, e, f, odd, scalar]) x.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

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
