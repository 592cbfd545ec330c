// Reduction op cases: sum, mean and max over axes, with and without keepDims (see nn/checks/index.ts).

import { sum, mean, max } from '../index.ts';
import { ref } from '../../kernels/reduce.ts';
import type { NamedOpCase } from '../check.ts';

const fns = { sum, mean, max };

const shapes: [number[], number[] | undefined, boolean][] = [
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
  [[4, 1, 1, 6], [1, 2], false], // only size-1 axes: a view (global pooling of a 1x1 map)
  [[3, 1, 5], [1], true],
];

export const reduceCases: NamedOpCase[] = [];
for (const op of ['sum', 'mean', 'max'] as const) {
  for (const [shape, axes, keep] of shapes) {
    reduceCases.push({
      name: `${op} ${JSON.stringify(shape)} axes=${JSON.stringify(axes)} keepDims=${keep}`,
      shapes: [shape],
      ref: ([x]) => ref.reduce(op, x, axes ?? shape.map((_, i) => i), keep),
      refGrad: ([x], dy) => [ref.reduceBackward(op, x, axes ?? shape.map((_, i) => i), dy)],
      gpu: ([x]) => fns[op](x, axes, keep),
      tol: 1e-5,
    });
  }
}
