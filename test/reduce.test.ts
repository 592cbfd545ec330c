import { suite } from 'uvu';
import { opTest } from './helpers/gradcheck.ts';
import { sum, mean, max } from '../engine/index.ts';
import { ref } from '../kernels/reduce.ts';

const t = suite('reduce');
const fns = { sum, mean, max };

const cases: [number[], number[] | undefined, boolean][] = [
  [[1], undefined, false],
  [[17], [0], false],
  [[5, 7], [1], false],
  [[5, 7], [0], true],
  [[3, 4, 5], [0, 2], false],
  [[2, 3, 4, 5], [1, 2], true],
  [[2, 3, 4, 5], [-1], false],
  [[300, 70], [1], false], // row reduction, many workgroups
  [[4099, 3], [0], false], // few outputs, long columns: two-level
  [[9, 1000], [0], true],
  [[100003], undefined, false], // one long row
];

for (const op of ['sum', 'mean', 'max'] as const) {
  for (const [shape, axes, keep] of cases) {
    opTest(`${op} ${JSON.stringify(shape)} axes=${JSON.stringify(axes)} keepDims=${keep}`, {
      shapes: [shape],
      ref: ([x]) => ref.reduce(op, x, axes ?? shape.map((_, i) => i), keep),
      refGrad: ([x], dy) => [ref.reduceBackward(op, x, axes ?? shape.map((_, i) => i), dy)],
      gpu: ([x]) => fns[op](x, axes, keep),
      tol: 1e-5,
    }, t);
  }
}

t.run();
