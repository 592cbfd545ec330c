import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest } from './helpers/gradcheck.ts';
import { tensor } from '../engine/index.ts';
import { maxPool2d, globalAvgPool, ref } from '../kernels/pool.ts';

const t = suite('pool');

const pools: [number[], number, number, number][] = [
  [[1, 1, 1, 1], 1, 1, 0],
  [[2, 9, 8, 4], 3, 2, 1], // the ResNet stem pool on odd sizes
  [[1, 7, 7, 3], 3, 2, 0],
  [[2, 5, 6, 5], 2, 2, 0],
  [[3, 16, 16, 17], 3, 2, 1], // many workgroups
  [[1, 6, 5, 2], 3, 1, 1], // overlapping windows, stride 1
];
for (const [shape, k, s, p] of pools) {
  opTest(`maxPool2d ${JSON.stringify(shape)} k=${k} s=${s} p=${p}`, {
    shapes: [shape],
    ref: ([x]) => ref.maxPool2d(x, k, s, p).y,
    refGrad: ([x], dy) => [ref.maxPool2dBackward(x, dy, k, s, p)],
    gpu: ([x]) => maxPool2d(x, { kernel: k, stride: s, padding: p }),
  }, t);
}

for (const shape of [[1, 1, 1, 1], [2, 3, 5, 7], [4, 7, 7, 64], [2, 1, 9, 3]]) {
  opTest(`globalAvgPool ${JSON.stringify(shape)}`, {
    shapes: [shape],
    ref: ([x]) => ref.globalAvgPool(x),
    refGrad: ([x], dy) => [ref.globalAvgPoolBackward(x, dy)],
    gpu: ([x]) => globalAvgPool(x),
  }, t);
}

t('pool errors name the op and the shape', () => {
  const x = tensor(new Float32Array(2 * 2 * 2), [1, 2, 2, 2]);
  assert.throws(() => maxPool2d(x, { kernel: 5, stride: 2, padding: 0 }), /maxPool2d.*\[1, 2, 2, 2\].*5x5/);
  assert.throws(() => maxPool2d(x, { kernel: 3, stride: 0 }), /maxPool2d: stride/);
  const flat = tensor(new Float32Array(4), [2, 2]);
  assert.throws(() => maxPool2d(flat), /maxPool2d.*NHWC.*\[2, 2\]/);
  assert.throws(() => globalAvgPool(flat), /globalAvgPool.*\[2, 2\]/);
  x.dispose();
  flat.dispose();
});

t.run();
